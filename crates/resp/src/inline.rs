//! Splitting an inline (telnet) request line into arguments, with the rules of Redis'
//! `sdssplitargs`:
//!
//! - arguments are separated by runs of whitespace (space, tab, CR, LF, VT, FF); outside
//!   quotes only space, tab, CR and LF end an argument;
//! - `"..."` understands `\n \r \t \b \a`, `\xHH` and `\<any>` (the byte itself);
//! - `'...'` understands only `\'`;
//! - a quote may open in the middle of an argument (`a"b c"` is `ab c`), but a closing quote
//!   must be followed by whitespace or the end of the line;
//! - an unterminated quote is an error;
//! - empty arguments (`""`) are kept.

/// Splits `line` (without its line terminator) into arguments; `None` if quotes are unbalanced.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let (arg, next) = split_one(line, i)?;
        args.push(arg);
        i = next;
    }
}

/// Where we are inside one argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Reads the argument starting at `start`; returns it and the index just after it.
fn split_one(line: &[u8], start: usize) -> Option<(Vec<u8>, usize)> {
    let mut arg = Vec::new();
    let mut quote = Quote::None;
    let mut i = start;
    loop {
        let c = line.get(i).copied();
        match (quote, c) {
            (Quote::None, None) => return Some((arg, i)),
            (Quote::None, Some(b' ' | b'\t' | b'\r' | b'\n')) => return Some((arg, i + 1)),
            (Quote::None, Some(b'"')) => quote = Quote::Double,
            (Quote::None, Some(b'\'')) => quote = Quote::Single,
            (Quote::None, Some(b)) => arg.push(b),
            (_, None) => return None,
            (Quote::Double, Some(b'\\')) if line.get(i + 1) == Some(&b'x') => {
                match (hex(line.get(i + 2)), hex(line.get(i + 3))) {
                    (Some(hi), Some(lo)) => {
                        arg.push(hi * 16 + lo);
                        i += 3;
                    }
                    // Not a complete \xHH: the backslash escapes the 'x' itself.
                    _ => {
                        arg.push(b'x');
                        i += 1;
                    }
                }
            }
            (Quote::Double, Some(b'\\')) if i + 1 < line.len() => {
                i += 1;
                arg.push(match line[i] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
            }
            (Quote::Single, Some(b'\\')) if line.get(i + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                i += 1;
            }
            (Quote::Double, Some(b'"')) | (Quote::Single, Some(b'\'')) => {
                return match line.get(i + 1) {
                    Some(&b) if !is_space(b) => None,
                    _ => Some((arg, i + 1)),
                };
            }
            (_, Some(b)) => arg.push(b),
        }
        i += 1;
    }
}

/// C `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::split_args;

    fn split(line: &[u8]) -> Option<Vec<Vec<u8>>> {
        split_args(line)
    }

    fn v(args: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
        Some(args.iter().map(|a| a.to_vec()).collect())
    }

    #[test]
    fn plain_words_and_whitespace() {
        assert_eq!(split(b"SET k v"), v(&[b"SET", b"k", b"v"]));
        assert_eq!(split(b"  GET\t\tk  "), v(&[b"GET", b"k"]));
        assert_eq!(split(b""), v(&[]));
        assert_eq!(split(b" \t\x0b\x0c "), v(&[]));
        // VT and FF are skipped between arguments but do not end one.
        assert_eq!(split(b"a\x0bb \x0bc"), v(&[b"a\x0bb", b"c"]));
        assert_eq!(split(b"a\rb"), v(&[b"a", b"b"]));
    }

    #[test]
    fn double_quotes_and_escapes() {
        assert_eq!(split(br#"ECHO "a b""#), v(&[b"ECHO", b"a b"]));
        assert_eq!(
            split(br#""\x41\x7a\n\r\t\b\a\"\\\q""#),
            v(&[b"Az\n\r\t\x08\x07\"\\q"])
        );
        assert_eq!(split(br#""\x4g""#), v(&[b"x4g"]));
        assert_eq!(split(br#""\x""#), v(&[b"x"]));
        assert_eq!(split(br#"ECHO """#), v(&[b"ECHO", b""]));
        assert_eq!(split(br#""" x"#), v(&[b"", b"x"]));
        assert_eq!(split(br#"a"b c"d"#), None);
        assert_eq!(split(br#"a"b c""#), v(&[b"ab c"]));
        assert_eq!(split(b"\"a\"\x0bx"), v(&[b"a", b"x"]));
    }

    #[test]
    fn single_quotes() {
        assert_eq!(split(br"'a\'b' c"), v(&[b"a'b", b"c"]));
        assert_eq!(split(br"'a\nb'"), v(&[b"a\\nb"]));
        assert_eq!(split(br"'a'b'"), None);
    }

    #[test]
    fn unbalanced() {
        assert_eq!(split(br#"ECHO "abc"#), None);
        assert_eq!(split(br#"ECHO "abc\"#), None);
        assert_eq!(split(br"ECHO 'abc"), None);
        assert_eq!(split(br#""a"b"#), None);
    }
}
