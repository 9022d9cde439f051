pub mod models;
pub mod predict;
