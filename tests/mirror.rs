//! Tests: mirrors and pools.
