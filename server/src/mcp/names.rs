//! Tool names as clients see them: `<server>-<tool>`, at most 64 characters.
//!
//! A name that would be longer keeps the server prefix and as much of the tool's name as fits
//! before `_` and the first 8 hex digits of the SHA-256 of the tool's full name. The result
//! depends only on the two names, so every instance and every listing agrees on it, and two
//! long tool names that share a start still differ.

use sha2::{Digest, Sha256};

/// The most characters a tool name may have (what clients such as Claude accept).
pub const MAX_TOOL_NAME: usize = 64;
/// Joins a server's name to its tools' names.
pub const SEPARATOR: char = '-';

/// The name clients use for `tool` of `server`.
pub fn prefixed(server: &str, tool: &str) -> String {
    let full = format!("{server}{SEPARATOR}{tool}");
    if full.chars().count() <= MAX_TOOL_NAME {
        return full;
    }
    let digest = hex::encode(Sha256::digest(tool.as_bytes()));
    let room = MAX_TOOL_NAME.saturating_sub(server.chars().count() + 1 + 1 + 8);
    let head: String = tool.chars().take(room).collect();
    format!("{server}{SEPARATOR}{head}_{}", &digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_joined_and_long_ones_shortened_deterministically() {
        assert_eq!(prefixed("github", "search"), "github-search");
        let long = "a".repeat(80);
        let other = format!("{}b", "a".repeat(79));
        let a = prefixed("github", &long);
        assert_eq!(a.chars().count(), MAX_TOOL_NAME);
        assert!(a.starts_with("github-aaaa"));
        assert_eq!(a, prefixed("github", &long), "the same every time");
        assert_ne!(a, prefixed("github", &other), "a shared start still differs");
        let exact = "t".repeat(MAX_TOOL_NAME - "s-".len());
        assert_eq!(prefixed("s", &exact), format!("s-{exact}"), "64 characters fit as they are");
    }
}
