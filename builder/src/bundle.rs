//! OCI runtime bundles: `config.json` and `runtime.json` for one entry.
//! (Being written; see the module docs once it lands.)
