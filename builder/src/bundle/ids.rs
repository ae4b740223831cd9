//! The uid/gid numbers entry names stand for, allocated as LinuxKit does.
//!
//! An entry's `uid`, `gid` or `additionalGids` (and a `files:` entry's
//! `uid`/`gid`) may name another entry; the name stands for the number that
//! entry was given. This module owns that numbering and nothing else.

use std::collections::BTreeMap;

use super::BundleError;
use crate::spec::{Definition, IdRef, Located};

/// The first number LinuxKit hands out to an entry (`Build` in build.go).
const FIRST_ID: u32 = 100;

/// name → uid/gid number for entries named by other entries' uid/gid, as
/// LinuxKit allocates them: 100, 101, … over onboot, then onshutdown, then
/// services (a repeated name takes the later number; docs/linuxkit-runtime.md §1.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap(BTreeMap<String, u32>);

impl IdMap {
    pub fn new(definition: &Definition) -> IdMap {
        let entries = definition
            .onboot
            .iter()
            .chain(&definition.onshutdown)
            .chain(&definition.services);
        // Every entry takes a number, named or not; collecting into a map
        // keeps the last number of a repeated name.
        let numbered = entries
            .zip(FIRST_ID..)
            .filter_map(|(image, id)| image.name.as_ref().map(|n| (n.value.clone(), id)));
        IdMap(numbered.collect())
    }

    /// `IdRef::Number(n)` → n; `Name("" | "root")` → 0; other names looked
    /// up; an unknown name is an error naming it and its position.
    pub fn resolve(&self, id: &Located<IdRef>) -> Result<u32, BundleError> {
        match &id.value {
            IdRef::Number(n) => Ok(*n),
            IdRef::Name(name) if name.is_empty() || name == "root" => Ok(0),
            IdRef::Name(name) => self.get(name).ok_or_else(|| BundleError::UnknownId {
                entry: String::new(),
                key: String::new(),
                name: name.clone(),
                position: id.position(),
            }),
        }
    }

    /// The number allocated to the entry called `name`.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.0.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, Origin};

    fn definition(yaml: &str) -> Definition {
        spec::parse(yaml, &Origin::from("t.yml")).unwrap()
    }

    #[test]
    fn ids_count_from_100_over_all_sections_and_a_repeat_takes_the_later() {
        let ids = IdMap::new(&definition(
            "onboot:\n  - name: a\n    image: x\n  - name: b\n    image: x\nonshutdown:\n  - name: a\n    image: x\nservices:\n  - name: c\n    image: x\n",
        ));
        assert_eq!(ids.get("a"), Some(102));
        assert_eq!(ids.get("b"), Some(101));
        assert_eq!(ids.get("c"), Some(103));
        let id = |value| Located::synthetic(value);
        assert_eq!(ids.resolve(&id(IdRef::Number(7))).unwrap(), 7);
        assert_eq!(ids.resolve(&id(IdRef::Name("root".into()))).unwrap(), 0);
        assert_eq!(ids.resolve(&id(IdRef::Name(String::new()))).unwrap(), 0);
        assert_eq!(
            ids.resolve(&id(IdRef::Name("zz".into())))
                .unwrap_err()
                .to_string(),
            "<generated>: no entry is named \"zz\", so it cannot stand for a user or group id"
        );
    }
}
