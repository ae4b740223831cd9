//! The trust policy of a definition (`trust:`, docs/signing.md): named
//! ed25519 public keys, and rules saying which images must be signed by
//! which of them.
//!
//! [`Pattern`] matches repository names; [`Policy::load`] reads the keys
//! (its only I/O: key files, relative to the YAML file that names them)
//! and turns LinuxKit's `image` and `org` lists into rules that any key
//! satisfies; [`Policy::verify`] is what the plan asks of each image once
//! it is pinned to the digest the build will use. Finding an image's
//! signatures is the image source's business, checking one is
//! `oci::signature::check`'s; this module decides which keys an image
//! needs and says which verified it.

use std::path::Path;

use oci::keys::{self, PublicKey};
use oci::lockfile::KeyUse;
use oci::reference::{DEFAULT_REGISTRY, Reference, RegistryRef};
use oci::registry::SmallManifest;
use oci::signature::{self, SignatureError};
use oci::{ImageSource, ResolvedImage};

use crate::spec::{Definition, Located, Problem, SpecError, Trust};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// No key a rule names verified the image: one line naming the image,
    /// its digest, the keys tried and why.
    #[error(transparent)]
    Refused(Box<SignatureError>),
}

/// Whether `name` may name a key: it is written into lock files as
/// `NAME=FINGERPRINT`.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A pattern of repository names, normalised as references are
/// (`berth/x` is `docker.io/berth/x`, a one-part name is under `library/`):
/// `*` matches within one path segment, `**` any number of whole segments,
/// and `**` alone every repository of every registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<String>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let fail = |reason: &str| Err(format!("pattern {text:?}: {reason}"));
        if text == "**" {
            return Ok(Pattern {
                segments: vec!["**".into()],
            });
        }
        if text.contains('@') {
            return fail("a pattern names repositories, without a digest");
        }
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return fail("an empty path segment");
        }
        let first = parts[0];
        let registry =
            parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
        let mut segments: Vec<String> = Vec::new();
        if !registry {
            segments.push(DEFAULT_REGISTRY.into());
            if parts.len() == 1 {
                segments.push("library".into());
            }
        }
        for (i, part) in parts.iter().enumerate() {
            let is_registry = registry && i == 0;
            if part.contains("**") && *part != "**" {
                return fail("`**` stands alone between slashes");
            }
            let allowed = |c: char| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || "._-*".contains(c)
                    || (is_registry && (c == ':' || c.is_ascii_uppercase()))
            };
            if let Some(bad) = part.chars().find(|c| !allowed(*c)) {
                return Err(match bad {
                    ':' => format!("pattern {text:?}: a pattern names repositories, without a tag"),
                    _ => format!(
                        "pattern {text:?}: {bad:?} is not allowed (lowercase letters, digits, . _ - and * in a repository)"
                    ),
                });
            }
            segments.push(if is_registry {
                part.to_ascii_lowercase()
            } else {
                part.to_string()
            });
        }
        // The registry as repositories are compared: Docker Hub under one
        // name, no `:443`.
        let canonical = signature::canonical_repository(&format!("{}/x/x", segments[0]));
        if let Some((host, _)) = canonical.split_once('/') {
            segments[0] = host.to_string();
        }
        Ok(Pattern { segments })
    }

    /// The pattern of every image of an organisation (LinuxKit's
    /// `trust.org`): `linuxkit` is `docker.io/linuxkit/**`.
    pub fn organisation(org: &str) -> Result<Pattern, String> {
        if org.contains('*') {
            return Err(format!("organisation {org:?}: a name, without `*`"));
        }
        Pattern::parse(&format!("{org}/**")).map_err(|e| format!("organisation {org:?}: {e}"))
    }

    /// Whether the repository `name` (`REGISTRY/PATH`, no tag or digest)
    /// matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let parts: Vec<&str> = name.split('/').collect();
        matches_segments(&self.segments, &parts)
    }
}

fn matches_segments(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=parts.len()).any(|skip| matches_segments(rest, &parts[skip..]))
        }
        Some((first, rest)) => match parts.split_first() {
            Some((part, more)) => {
                glob(first.as_bytes(), part.as_bytes()) && matches_segments(rest, more)
            }
            None => false,
        },
    }
}

/// `*` matches any run of characters of one segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// A key of the policy: its name, the key (named so in messages) and its
/// fingerprint.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub fingerprint: String,
}

impl TrustedKey {
    fn use_of(&self) -> KeyUse {
        KeyUse {
            name: self.key.name.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// What a rule matches.
#[derive(Debug, Clone)]
enum Matcher {
    Pattern(Pattern),
    /// LinuxKit's `trust.image`: a repository, and a tag if one is given.
    Image(RegistryRef),
}

#[derive(Debug, Clone)]
struct Rule {
    /// `rule "PATTERN" at FILE:LINE:COLUMN`, for refusals.
    what: String,
    matcher: Matcher,
    /// Indexes into the policy's keys.
    keys: Vec<usize>,
}

impl Rule {
    fn applies_to(&self, image: &RegistryRef) -> bool {
        // Every spelling of a repository is matched as one: Docker Hub's
        // other host names cannot slip past a rule for `docker.io`.
        let name = signature::canonical_repository(&signature::repository(image));
        match &self.matcher {
            Matcher::Pattern(pattern) => pattern.matches(&name),
            Matcher::Image(wanted) => {
                signature::canonical_repository(&signature::repository(wanted)) == name
                    && wanted
                        .tag
                        .as_ref()
                        .is_none_or(|tag| image.tag.as_ref() == Some(tag))
            }
        }
    }
}

/// A definition's trust policy, its keys read.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: Vec<TrustedKey>,
    rules: Vec<Rule>,
}

/// A policy and what is worth a warning about it.
#[derive(Debug, Default)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<String>,
}

impl Policy {
    /// Reads the keys of `definition`'s `trust:` (validated already) and
    /// makes its rules. Every problem is reported, each at the place in
    /// the YAML it comes from: a key file missing or not an ed25519 SPKI
    /// PEM, one name given two different keys.
    pub fn load(definition: &Definition) -> Result<Loaded, SpecError> {
        let Some(trust) = &definition.trust else {
            return Ok(Loaded::default());
        };
        let mut problems = Vec::new();
        let mut keys: Vec<TrustedKey> = Vec::new();
        let mut places: Vec<&Located<String>> = Vec::new();
        for entry in &trust.keys {
            let problem = |message: String| Problem {
                position: entry.key.position(),
                path: format!("trust.keys.{}", entry.name),
                message,
            };
            let key = match read_key(&entry.key) {
                Ok(mut key) => {
                    key.name = entry.name.clone();
                    key
                }
                Err(error) => {
                    problems.push(problem(oci::chain::render(&error)));
                    continue;
                }
            };
            let fingerprint = key.fingerprint();
            match keys.iter().position(|k| k.key.name == entry.name) {
                Some(i) if keys[i].fingerprint != fingerprint => problems.push(problem(format!(
                    "key {:?} is {fingerprint} here, but {} at {}",
                    entry.name,
                    keys[i].fingerprint,
                    places[i].position()
                ))),
                Some(_) => {}
                None => {
                    keys.push(TrustedKey { key, fingerprint });
                    places.push(&entry.key);
                }
            }
        }
        if !problems.is_empty() {
            return Err(SpecError { problems });
        }
        let mut loaded = Loaded::default();
        let index = |name: &str| keys.iter().position(|k| k.key.name == name);
        for rule in &trust.images {
            let pattern = Pattern::parse(&rule.pattern).map_err(|message| Problem {
                position: rule.pattern.position(),
                path: "trust.images".into(),
                message,
            })?;
            loaded.policy.rules.push(Rule {
                what: format!(
                    "rule {:?} at {}",
                    rule.pattern.value,
                    rule.pattern.position()
                ),
                matcher: Matcher::Pattern(pattern),
                keys: rule.keys.iter().filter_map(|name| index(name)).collect(),
            });
        }
        loaded
            .warnings
            .extend(linuxkit_rules(trust, &keys, &mut loaded.policy.rules)?);
        loaded.policy.keys = keys;
        Ok(loaded)
    }

    /// Checks `image`, pinned to the digest the build will use, against
    /// every rule that matches its repository: each needs a signature by
    /// one of its keys, for that digest (or for the index the manifest was
    /// chosen from) and that repository. The keys that verified it, or
    /// `None` when no rule matches; a refusal names the image, its digest,
    /// the keys tried and why.
    pub fn verify(
        &self,
        source: &dyn ImageSource,
        name: &RegistryRef,
        image: &ResolvedImage,
    ) -> Result<Option<Vec<KeyUse>>, TrustError> {
        let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.applies_to(name)).collect();
        if rules.is_empty() {
            return Ok(None);
        }
        // Signatures that cannot be fetched or read are a reason for a
        // refusal, not the end of the check: the index's may still verify.
        let fetch = |digest: &str| -> Result<Option<SmallManifest>, String> {
            source.signatures(name, digest).map_err(|error| {
                format!(
                    "its signatures could not be read: {}",
                    oci::chain::render(&error)
                )
            })
        };
        let mut candidates = vec![(image.digest.as_str(), fetch(&image.digest))];
        if let Some(index) = &image.index {
            candidates.push((index.as_str(), fetch(index)));
        }
        let mut used = Vec::new();
        for rule in rules {
            let keys: Vec<PublicKey> = rule
                .keys
                .iter()
                .map(|&i| self.keys[i].key.clone())
                .collect();
            let mut reasons = Vec::new();
            let mut verified = None;
            for (digest, found) in &candidates {
                let checked = found
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|found| signature::check(name, digest, found.as_ref(), &keys));
                match checked {
                    Ok(key) => {
                        verified = Some(key);
                        break;
                    }
                    Err(reason) if *digest == image.digest => reasons.push(reason),
                    Err(reason) => reasons.push(format!("for its index {digest}, {reason}")),
                }
            }
            let Some(key) = verified else {
                let tried: Vec<String> = rule
                    .keys
                    .iter()
                    .map(|&i| format!("{} ({})", self.keys[i].key.name, self.keys[i].fingerprint))
                    .collect();
                return Err(TrustError::Refused(Box::new(SignatureError::Refused {
                    image: name.to_string(),
                    digest: image.digest.clone(),
                    keys: if tried.is_empty() {
                        "no key".into()
                    } else {
                        tried.join(", ")
                    },
                    reason: format!(
                        "{} (required by the trust policy's {})",
                        reasons.join("; "),
                        rule.what
                    ),
                })));
            };
            if let Some(trusted) = self.keys.iter().find(|k| k.key.name == key) {
                used.push(trusted.use_of());
            }
        }
        used.sort();
        used.dedup();
        Ok(Some(used))
    }
}

/// LinuxKit's `image` and `org` lists as rules any key satisfies; without
/// keys they check nothing, and say so.
fn linuxkit_rules(
    trust: &Trust,
    keys: &[TrustedKey],
    rules: &mut Vec<Rule>,
) -> Result<Vec<String>, SpecError> {
    let images = trust.image.iter().flatten();
    let orgs = trust.org.iter().flatten();
    let Some(first) = images.clone().chain(orgs.clone()).next() else {
        return Ok(Vec::new());
    };
    if keys.is_empty() {
        return Ok(vec![format!(
            "{}: trust: the image and org lists have no keys to check against (berth's trust.keys), so no signature is checked",
            first.position()
        )]);
    }
    let all: Vec<usize> = (0..keys.len()).collect();
    let problem = |place: &Located<String>, path: &str, message: String| Problem {
        position: place.position(),
        path: path.into(),
        message,
    };
    for image in images {
        let matcher = match Reference::parse(image) {
            Ok(Reference::Registry(reference)) => Matcher::Image(reference),
            Ok(Reference::Package(_)) => {
                return Err(
                    problem(image, "trust.image", "not an image in a registry".into()).into(),
                );
            }
            Err(e) => return Err(problem(image, "trust.image", e.to_string()).into()),
        };
        rules.push(Rule {
            what: format!("image {:?} at {}", image.value, image.position()),
            matcher,
            keys: all.clone(),
        });
    }
    for org in orgs {
        let pattern = Pattern::organisation(org).map_err(|m| problem(org, "trust.org", m))?;
        rules.push(Rule {
            what: format!("org {:?} at {}", org.value, org.position()),
            matcher: Matcher::Pattern(pattern),
            keys: all.clone(),
        });
    }
    Ok(Vec::new())
}

/// A key of `trust.keys`: the PEM itself, or a file relative to the YAML
/// file that names it.
fn read_key(key: &Located<String>) -> Result<PublicKey, keys::KeyError> {
    if key.contains("-----BEGIN") {
        return keys::parse_public(key, Path::new("(inline PEM)"));
    }
    let path = crate::assemble::resolve_source(key, key.origin.as_deref());
    keys::read_public(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn patterns_are_normalised_like_references() {
        assert!(pattern("berth/*").matches("docker.io/berth/init"));
        assert!(!pattern("berth/*").matches("docker.io/berth/a/b"));
        assert!(!pattern("berth/*").matches("ghcr.io/berth/init"));
        assert!(pattern("redis").matches("docker.io/library/redis"));
        assert!(!pattern("redis").matches("docker.io/redis/redis"));
        assert!(pattern("*").matches("docker.io/library/alpine"));
        assert!(pattern("127.0.0.1:5000/*").matches("127.0.0.1:5000/init"));
        assert!(!pattern("127.0.0.1:5000/*").matches("127.0.0.1:5000/test/init"));
        assert!(pattern("localhost/x").matches("localhost/x"));
        assert!(pattern("Example.COM/x").matches("example.com/x"));
    }

    #[test]
    fn every_spelling_of_a_repository_meets_its_rules() {
        let image = |registry: &str, repository: &str| RegistryRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: Some("1".into()),
            digest: None,
        };
        let rule = |matcher| Rule {
            what: "rule".into(),
            matcher,
            keys: Vec::new(),
        };
        let berth = rule(Matcher::Pattern(pattern("berth/**")));
        for registry in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "registry.hub.docker.com",
            "Registry-1.Docker.IO",
            "docker.io:443",
        ] {
            assert!(
                berth.applies_to(&image(registry, "berth/sshd")),
                "{registry}"
            );
        }
        assert!(!berth.applies_to(&image("ghcr.io", "berth/sshd")));
        let hub = rule(Matcher::Pattern(pattern("registry-1.docker.io/berth/*")));
        assert!(hub.applies_to(&image("docker.io", "berth/sshd")));
        let redis = rule(Matcher::Image(image("docker.io", "library/redis")));
        assert!(redis.applies_to(&image("docker.io", "redis")));
        assert!(redis.applies_to(&image("INDEX.docker.io", "library/redis")));
        let local = rule(Matcher::Pattern(pattern("127.0.0.1:5000/*")));
        assert!(local.applies_to(&image("127.0.0.1:5000", "init")));
        assert!(!local.applies_to(&image("127.0.0.1:5001", "init")));
    }

    #[test]
    fn a_double_star_crosses_segments_and_alone_matches_everything() {
        assert!(pattern("berth/**").matches("docker.io/berth/init"));
        assert!(pattern("berth/**").matches("docker.io/berth/a/b/c"));
        assert!(!pattern("berth/**").matches("docker.io/other/init"));
        assert!(pattern("127.0.0.1:5000/**/init").matches("127.0.0.1:5000/init"));
        assert!(pattern("127.0.0.1:5000/**/init").matches("127.0.0.1:5000/a/b/init"));
        assert!(!pattern("127.0.0.1:5000/**/init").matches("127.0.0.1:5000/a/b/initx"));
        assert!(pattern("ghcr.io/org/kernel-*").matches("ghcr.io/org/kernel-6.1"));
        assert!(pattern("ghcr.io/*/kernel").matches("ghcr.io/any/kernel"));
        assert!(pattern("*.example.org/**").matches("registry.example.org/a/b"));
        assert!(pattern("**").matches("127.0.0.1:5000/x"));
        assert!(pattern("**").matches("docker.io/library/alpine"));
        let org = Pattern::organisation("linuxkit").unwrap();
        assert!(org.matches("docker.io/linuxkit/init"));
        assert!(!org.matches("docker.io/library/linuxkit"));
    }

    #[test]
    fn malformed_patterns_are_refused_saying_why() {
        let error = |text: &str| Pattern::parse(text).unwrap_err();
        assert!(error("berth/x:1").contains("without a tag"));
        assert!(error("berth/x@sha256:00").contains("without a digest"));
        assert!(error("berth//x").contains("empty path segment"));
        assert!(error("berth/a**").contains("stands alone"));
        assert!(error("Berth/x").contains("'B' is not allowed"));
        assert!(error("").contains("empty path segment"));
        assert!(Pattern::organisation("lin*").is_err());
    }

    #[test]
    fn linuxkit_images_match_their_repository_and_tag_if_given() {
        let rule = |text: &str| Rule {
            what: String::new(),
            matcher: match Reference::parse(text).unwrap() {
                Reference::Registry(r) => Matcher::Image(r),
                Reference::Package(_) => unreachable!(),
            },
            keys: Vec::new(),
        };
        let image = |text: &str| match Reference::parse(text).unwrap() {
            Reference::Registry(r) => r,
            Reference::Package(_) => unreachable!(),
        };
        assert!(rule("redis:4.0.5-alpine").applies_to(&image("redis:4.0.5-alpine")));
        assert!(!rule("redis:4.0.5-alpine").applies_to(&image("redis:5")));
        assert!(rule("redis").applies_to(&image("docker.io/library/redis:5")));
        assert!(!rule("redis").applies_to(&image("other/redis:5")));
    }

    /// A key pair's public half as PEM.
    fn pem() -> String {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) =
            keys::write_pair(&keys::generate().unwrap(), &dir.path().join("k"), None).unwrap();
        std::fs::read_to_string(public).unwrap()
    }

    /// Parses, merges and validates `files` (name, text), then loads the
    /// policy: its warnings, or every problem on one line each.
    fn load(files: &[(&str, &str)]) -> Result<Vec<String>, String> {
        let mut definition = Definition::default();
        for (name, text) in files {
            let origin: crate::spec::Origin = (*name).into();
            definition.merge(crate::spec::parse(text, &origin).map_err(|e| e.to_string())?);
        }
        crate::spec::validate(&definition).map_err(|e| e.to_string())?;
        Policy::load(&definition)
            .map(|loaded| loaded.warnings)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_read_relative_to_their_file_or_inline_and_named_where_they_fail() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir_all(sub.join("keys")).unwrap();
        std::fs::write(sub.join("keys/release.pub"), pem()).unwrap();
        std::fs::write(
            sub.join("keys/bad.pub"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let yaml = sub.join("a.yml").display().to_string();
        let inline = pem().replace('\n', "\n      ");
        let good = format!(
            "trust:\n  keys:\n    release: keys/release.pub\n    ci: |\n      {inline}\n  images:\n    - pattern: \"berth/**\"\n      keys: [release, ci]\n"
        );
        assert_eq!(load(&[(&yaml, &good)]), Ok(vec![]));

        let missing = "trust:\n  keys:\n    release: keys/missing.pub\n";
        let error = load(&[(&yaml, missing)]).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "{yaml}:3:14: trust.keys.release: key {}",
                sub.join("keys/missing.pub").display()
            )),
            "{error}"
        );
        assert!(error.contains("No such file"), "{error}");

        let bad = "trust:\n  keys:\n    release: keys/bad.pub\n";
        let error = load(&[(&yaml, bad)]).unwrap_err();
        assert!(
            error.starts_with(&format!("{yaml}:3:14: trust.keys.release: key ")),
            "{error}"
        );
        assert!(
            error.contains("bad.pub: a PEM \"CERTIFICATE\" block"),
            "{error}"
        );

        let inline_bad = "trust:\n  keys:\n    ci: \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n\"\n";
        let error = load(&[(&yaml, inline_bad)]).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "{yaml}:3:9: trust.keys.ci: key (inline PEM): not an ed25519 public key"
            )),
            "{error}"
        );
    }

    #[test]
    fn rules_name_defined_keys_and_fields_are_known() {
        let undefined =
            "trust:\n  keys: {}\n  images:\n    - pattern: \"x/*\"\n      keys: [release]\n";
        assert_eq!(
            load(&[("t.yml", undefined)]).unwrap_err(),
            "t.yml:5:14: trust.images[0].keys[0]: no key \"release\" in trust.keys (defined: none)"
        );
        let unknown = "trust:\n  images:\n    - pattern: \"x/*\"\n      key: [release]\n";
        let error = load(&[("t.yml", unknown)]).unwrap_err();
        assert!(
            error.starts_with("t.yml:4:7: trust.images[0].key: unknown field `key`"),
            "{error}"
        );
        let unknown = "trust:\n  signers: []\n";
        let error = load(&[("t.yml", unknown)]).unwrap_err();
        assert!(
            error.starts_with("t.yml:2:3: trust.signers: unknown field `signers`"),
            "{error}"
        );
        let pattern = "trust:\n  keys: {}\n  images:\n    - pattern: \"x/y:1\"\n      keys: []\n";
        let error = load(&[("t.yml", pattern)]).unwrap_err();
        assert!(error.contains("t.yml:4:16: trust.images[0].pattern: pattern \"x/y:1\": a pattern names repositories, without a tag"), "{error}");
        assert!(
            error.contains("trust.images[0].keys: a rule names at least one key"),
            "{error}"
        );
    }

    #[test]
    fn linuxkit_lists_without_keys_warn_and_merged_names_must_agree() {
        let linuxkit = "trust:\n  org:\n    - linuxkit\n  image:\n    - redis:4.0.5-alpine\n";
        let warnings = load(&[("lk.yml", linuxkit)]).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("lk.yml:5:7: trust: the image and org lists have no keys"),
            "{warnings:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("k.pub"), pem()).unwrap();
        }
        let a = dir.path().join("a/x.yml").display().to_string();
        let b = dir.path().join("b/y.yml").display().to_string();
        let text = "trust:\n  keys:\n    release: k.pub\n";
        let error = load(&[(&a, text), (&b, text)]).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "{b}:3:14: trust.keys.release: key \"release\" is sha256:"
            )),
            "{error}"
        );
        assert!(error.ends_with(&format!(" at {a}:3:14")), "{error}");
        // The same key under the same name twice is one key.
        std::fs::copy(dir.path().join("a/k.pub"), dir.path().join("b/k.pub")).unwrap();
        assert_eq!(load(&[(&a, text), (&b, text)]), Ok(vec![]));
    }

    #[test]
    fn every_matching_rule_needs_one_of_its_keys_and_a_signature_of_the_index_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut signing = Vec::new();
        for name in ["a", "b"] {
            let key = keys::generate().unwrap();
            keys::write_pair(&key, &dir.path().join(name), None).unwrap();
            signing.push(key);
        }
        let yaml = dir.path().join("t.yml").display().to_string();
        let text = "trust:\n  keys:\n    a: a.pub\n    b: b.pub\n  images:\n    - pattern: \"127.0.0.1:5000/x/*\"\n      keys: [a]\n    - pattern: \"127.0.0.1:5000/**\"\n      keys: [b]\n";
        let definition = crate::spec::parse(text, &yaml.as_str().into()).unwrap();
        let policy = Policy::load(&definition).unwrap().policy;
        let cache = oci::Layout::open(dir.path().join("cache")).unwrap();
        let (manifest, index) = (
            oci::digest::sha256(b"manifest"),
            oci::digest::sha256(b"index"),
        );
        let name = |text: &str| match Reference::parse(text).unwrap() {
            Reference::Registry(r) => r,
            Reference::Package(_) => unreachable!(),
        };
        let image = |reference: &RegistryRef| ResolvedImage {
            reference: reference.to_string(),
            digest: manifest.clone(),
            index: Some(index.clone()),
            config: Default::default(),
            layers: Vec::new(),
        };
        let sign = |reference: &RegistryRef, digest: &str, key: usize| {
            let pinned = RegistryRef {
                digest: Some(digest.to_string()),
                ..reference.clone()
            };
            signature::sign(&cache, None, &pinned, &signing[key]).unwrap();
        };
        let fingerprint = |key: usize| keys::public_of(&signing[key], "").fingerprint();

        // Both rules match; the manifest is signed by `a` alone.
        let one = name("127.0.0.1:5000/x/one:1");
        sign(&one, &manifest, 0);
        let error = policy
            .verify(&cache, &one, &image(&one))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "image 127.0.0.1:5000/x/one:1 ({manifest}): not verified with b ({}): signature 1 is by none of the keys; for its index {index}, it has no signature",
                fingerprint(1)
            )) && error.ends_with(&format!("(required by the trust policy's rule \"127.0.0.1:5000/**\" at {yaml}:8:16)")),
            "{error}"
        );
        // The index the manifest was chosen from, signed by `b`, satisfies the other.
        sign(&one, &index, 1);
        let used = policy.verify(&cache, &one, &image(&one)).unwrap().unwrap();
        let names: Vec<(&str, String)> = used
            .iter()
            .map(|k| (k.name.as_str(), k.fingerprint.clone()))
            .collect();
        assert_eq!(names, vec![("a", fingerprint(0)), ("b", fingerprint(1))]);

        // Only the second rule matches here, and `a` is not its key.
        let two = name("127.0.0.1:5000/z/two:1");
        sign(&two, &manifest, 0);
        let error = policy
            .verify(&cache, &two, &image(&two))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not verified with b (") && error.contains("none of the keys"),
            "{error}"
        );
        // No rule matches another registry's images: nothing is asked.
        let elsewhere = name("127.0.0.2:5000/x/one:1");
        assert_eq!(
            policy
                .verify(&cache, &elsewhere, &image(&elsewhere))
                .unwrap(),
            None
        );

        // Signatures that cannot be read are one reason among others: the
        // index's still verify; without them, that is the refusal's reason.
        let junk = b"not a manifest";
        let junk_digest = oci::digest::sha256(junk);
        cache.write_blob(&junk_digest, junk).unwrap();
        let unreadable = |reference: &RegistryRef| {
            let at = signature::signature_ref(reference, &manifest).unwrap();
            cache
                .tag(&oci::Named {
                    name: at.to_string(),
                    digest: junk_digest.clone(),
                    media_type: signature::MANIFEST_TYPE.into(),
                    size: junk.len() as u64,
                })
                .unwrap();
        };
        let three = name("127.0.0.1:5000/x/three:1");
        unreadable(&three);
        sign(&three, &index, 0);
        sign(&three, &index, 1);
        let used = policy.verify(&cache, &three, &image(&three)).unwrap();
        assert_eq!(used.map(|keys| keys.len()), Some(2));
        let four = name("127.0.0.1:5000/x/four:1");
        unreadable(&four);
        let error = policy
            .verify(&cache, &four, &image(&four))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("its signatures could not be read") && !error.contains('\n'),
            "{error}"
        );
    }
}
