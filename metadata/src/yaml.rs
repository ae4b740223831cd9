//! A YAML error as one log line: where it is (`NAME:LINE:COLUMN`) and what,
//! without the excerpt of the input serde-saphyr adds (user data may hold
//! secrets, and an excerpt can be long).

/// `origin:line:column: message`, on one line.
pub fn error_line(origin: &str, error: &serde_saphyr::Error) -> String {
    let position = match error.location() {
        Some(l) => format!("{origin}:{}:{}", l.line(), l.column()),
        None => origin.to_string(),
    };
    let message = error.without_snippet().to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => &message,
    };
    format!(
        "{position}: {}",
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_and_message_without_the_input() {
        let text = "a: 1\nsecret: [unclosed\n";
        let error = serde_saphyr::from_str::<serde_json::Value>(text).unwrap_err();
        let line = error_line("meta-data", &error);
        assert!(line.starts_with("meta-data:2:"), "{line}");
        assert!(
            !line.contains("unclosed\n") && !line.contains('\n'),
            "{line}"
        );
        assert!(!line.contains("secret"), "{line}");
    }
}
