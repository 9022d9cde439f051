//! The committee core: logits caches, metrics, and (next) ensembles and cascades over them.

pub mod cache;
pub mod cascade;
pub mod combine;
pub mod metrics;

pub use cache::{CacheError, CacheMeta, LogitsCache};
