pub mod bench;
pub mod eval;
pub mod merge;
pub mod models;
pub mod predict;
