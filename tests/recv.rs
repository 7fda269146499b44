//! Tests: recv.
