//! Values that remember where they were written: file, line and column.
//!
//! Deserialisation cannot pass context down to a `Deserialize` impl, so the
//! parser names the file being read in a thread-local for the duration of one
//! parse; [`Located`] picks it up together with the line and column that
//! `serde-saphyr` reports.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name of the text a value came from: a file path, `<stdin>`, or a
/// description such as `label org.mobyproject.config of IMAGE`.
pub type Origin = Arc<str>;

thread_local! {
    static CURRENT: RefCell<Option<Origin>> = const { RefCell::new(None) };
}

/// Runs `f` with `origin` as the origin of every [`Located`] it deserialises.
pub(super) fn with_origin<R>(origin: &Origin, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(Some(origin.clone())));
    let result = f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    result
}

/// A value and the place it was written.
#[derive(Clone)]
pub struct Located<T> {
    pub value: T,
    pub origin: Option<Origin>,
    /// 1-based; 0 when the value was not read from text.
    pub line: u64,
    pub column: u64,
}

impl<T> Located<T> {
    /// A value made by the program, not read from a file.
    pub fn synthetic(value: T) -> Self {
        Located {
            value,
            origin: None,
            line: 0,
            column: 0,
        }
    }

    /// `file:line:column`, or just the file when the position is unknown.
    pub fn position(&self) -> String {
        let file = self.origin.as_deref().unwrap_or("<generated>");
        if self.line == 0 {
            file.to_string()
        } else {
            format!("{file}:{}:{}", self.line, self.column)
        }
    }
}

impl<T: Default> Default for Located<T> {
    fn default() -> Self {
        Located::synthetic(T::default())
    }
}

/// Two values are equal when their contents are, wherever they were written.
impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            origin: CURRENT.with(|c| c.borrow().clone()),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}
