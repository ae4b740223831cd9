//! An error and its causes as one line: `outer: cause: cause`.
//!
//! berth's own errors print their own message only and expose their cause
//! as `source()`, so the chain is written here, once. Errors of other
//! crates (the registry client's, its HTTP stack's) often repeat their cause
//! in their own message; a cause the line already ends with is not written
//! twice.

use std::error::Error;

/// The whole chain of `error`, separated by `: `.
pub fn render(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !text.is_empty() && !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = inner.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {name}")]
    struct Outer {
        name: &'static str,
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn each_cause_is_written_once() {
        let error = Outer {
            name: "x",
            source: Middle(std::io::Error::other("bottom")),
        };
        // Middle repeats its cause, as foreign errors do: written once.
        assert_eq!(render(&error), "outer x: middle: bottom");
    }
}
