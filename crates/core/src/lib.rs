//! The committee core: logits caches, metrics, ensembles, cascades and the search over them.

pub mod atomic;
pub mod cache;
pub mod cascade;
pub mod combine;
pub mod costs;
pub mod exp;
pub mod metrics;
pub mod partial;
pub mod scaling;
pub mod search;
pub mod spec;
pub mod split;

pub use atomic::write_atomic;
pub use cache::{CacheError, CacheMeta, Logits, LogitsCache};
