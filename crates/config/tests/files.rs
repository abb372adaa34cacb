//! Loading from a file: a missing file, and a file that is not UTF-8, are named as such.

use rampart_config::{load, ConfigError};

#[test]
fn a_missing_file_is_said_not_to_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("none.yml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: the configuration file does not exist", path.display())
    );
    assert!(!err.is_invalid_content());
}

#[test]
fn invalid_utf8_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latin1.yml");
    // "café" in Latin-1 on line 4, after a valid two-byte character on line 3.
    let text = b"alpha:\n  listen: 127.0.0.1:22121\n  # \xc3\xa9t\xc3\xa9\n  servers:\n   - 127.0.0.1:6379:1 caf\xe9\n";
    std::fs::write(&path, text).expect("write");
    let err = load(&path).unwrap_err();
    assert_eq!(err.line(), Some(5));
    assert_eq!(
        err.to_string(),
        format!(
            "{}:5:26: the file is not valid UTF-8 text (byte 0xe9 here); save it as UTF-8",
            path.display()
        )
    );
    assert!(!err.is_invalid_content());

    // A multi-byte character earlier on the same line counts as one column.
    std::fs::write(&path, b"# \xc3\xa9\xff\n").expect("write");
    let err = load(&path).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(":1:4: the file is not valid UTF-8 text (byte 0xff here); save it as UTF-8"),
        "{err}"
    );
}

#[test]
fn a_directory_is_a_read_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
}
