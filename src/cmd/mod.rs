pub mod bench;
pub mod committee;
pub mod data;
pub mod eval;
pub mod live;
pub mod merge;
pub mod models;
pub mod predict;
