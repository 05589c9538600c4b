//! (being written)
pub struct SqliteStore;
