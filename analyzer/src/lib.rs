//! memgap's analyzer: reads bundles, builds a model of the node, its cgroups and processes, and
//! explains why memory usage exceeds RSS.
//!
//! Pipeline: [`reader`] (bundle -> files, with diagnostics) -> [`parse`] (text -> typed values)
//! -> [`model`] (node, cgroup tree, derived values) -> [`output`] (JSON, text).

pub mod format;
pub mod model;
pub mod output;
pub mod parse;
pub mod reader;

use std::path::Path;

/// Reads one bundle and builds the model of its latest snapshot.
pub fn analyze(path: &Path) -> Result<model::Model, reader::BundleError> {
    let b = reader::read(path, &reader::Limits::default())?;
    Ok(model::build(&b))
}
