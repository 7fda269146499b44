//! Tests: send_tree.
