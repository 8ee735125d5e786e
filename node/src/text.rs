//! Text from outside (peers' names, checks and errors; config values) made safe to show.
//!
//! A peer controls the strings in its signed observation and a config file may hold anything:
//! control characters could move the operator's cursor or rewrite what the terminal shows, and
//! format characters (bidirectional overrides, zero-width spaces) make two different names look
//! the same. [`is_invisible`] names both kinds; [`escape`] writes them as `\u{…}`.
//! [`error_chain`] prints an error with its causes, each text once.

/// Whether `c` is a control character or an invisible format character (zero-width, joiners,
/// bidirectional marks and overrides, the byte-order mark, the soft hyphen).
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}')
}

/// `text` with every [`is_invisible`] character written as `\u{…}` (and `\` as `\\`, so that an
/// escape cannot be faked), fit for a terminal.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `error` and its causes, `: `-separated, each text once: a cause whose text its parent already
/// shows (an error that prints its source and also returns it) is not repeated.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_format_characters_are_escaped() {
        assert_eq!(escape("beta"), "beta");
        assert_eq!(escape("be\x1b[2Jta"), "be\\u{1b}[2Jta");
        assert_eq!(escape("a\nb\rc\x07"), "a\\u{a}b\\u{d}c\\u{7}");
        assert_eq!(escape("ad\u{202E}min"), "ad\\u{202e}min");
        assert_eq!(escape("zero\u{200B}width"), "zero\\u{200b}width");
        assert_eq!(escape("back\\u{1b}"), "back\\\\u{1b}");
        assert_eq!(escape("café 東京"), "café 東京");
        assert!(is_invisible('\u{FEFF}') && !is_invisible('é'));
    }

    #[test]
    fn a_cause_shown_by_its_parent_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot bind 127.0.0.1:53: {0}")]
        struct Bind(#[source] std::io::Error);
        let io = std::io::Error::from_raw_os_error(98);
        let e = anyhow::Error::new(Bind(io)).context("node.dns");
        let text = error_chain(&e);
        assert_eq!(text.matches("os error 98").count(), 1, "{text}");
        assert!(text.starts_with("node.dns: cannot bind 127.0.0.1:53: "), "{text}");
        assert_eq!(error_chain(&anyhow::anyhow!("a").context("b")), "b: a");
    }
}
