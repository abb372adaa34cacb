//! Client-supplied bytes made fit for one line of text (error replies, logs, slowlog).

/// Text of a client-supplied argument fit for an error line: at most `max` bytes, newlines
/// replaced by spaces (an error reply is one line).
pub fn sanitize(arg: &[u8], max: usize) -> String {
    let cut = &arg[..arg.len().min(max)];
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}
