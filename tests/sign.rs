//! Tests: sign.
