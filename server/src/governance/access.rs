//! Model access: whether an allow-list lets a caller use a model.
//!
//! A list holds model names, access-group names (`model_info.access_groups`), glob patterns
//! (`openai/*`, `*`), exclusions (`!openai/o1-*`, `!group`), and the special values
//! `all-proxy-models` (everything), `all-team-models` (whatever the team allows) and
//! `no-default-models` (a user's personal keys get nothing). The most specific matching rule
//! wins — an exact name beats any pattern, a longer literal beats a shorter one, and on a tie
//! an exclusion wins — so `["openai/*", "!openai/o1-*"]` allows `openai/gpt-4o` but not
//! `openai/o1-mini`. An empty list restricts nothing: the level inherits from the levels
//! around it.

use std::collections::HashMap;

pub const ALL_PROXY_MODELS: &str = "all-proxy-models";
pub const ALL_TEAM_MODELS: &str = "all-team-models";
pub const NO_DEFAULT_MODELS: &str = "no-default-models";

/// Access groups: group name → the model names in it.
#[derive(Debug, Clone, Default)]
pub struct AccessGroups(pub HashMap<String, Vec<String>>);

/// Whether `text` matches a glob `pattern` where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// How specific a rule is: exact names beat every pattern; patterns rank by literal length.
fn specificity(pattern: &str) -> usize {
    if pattern.contains('*') { pattern.chars().filter(|c| *c != '*').count() } else { usize::MAX }
}

/// What a list says about `model`: `None` when it restricts nothing (empty, or only
/// inheritance markers), else whether it allows the model.
pub fn list_allows(list: &[String], model: &str, groups: &AccessGroups) -> Option<bool> {
    let mut restricts = false;
    // Every rule that matches: (specificity, allow).
    let mut matches: Vec<(usize, bool)> = Vec::new();
    for entry in list {
        let (allow, name) = match entry.strip_prefix('!') {
            Some(rest) => (false, rest),
            None => (true, entry.as_str()),
        };
        if name == ALL_TEAM_MODELS {
            continue;
        }
        restricts = true;
        match name {
            NO_DEFAULT_MODELS => {}
            ALL_PROXY_MODELS => matches.push((0, allow)),
            _ => {
                let patterns =
                    groups.0.get(name).map_or_else(|| vec![name], |ms| ms.iter().map(String::as_str).collect());
                for p in patterns {
                    if glob(p, model) {
                        matches.push((specificity(p), allow));
                    }
                }
            }
        }
    }
    // Highest specificity wins; on a tie, an exclusion (false < true) wins.
    let best = matches.into_iter().max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    restricts.then(|| best.is_some_and(|(_, allow)| allow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn groups() -> AccessGroups {
        AccessGroups(
            [("beta".to_string(), l(&["gpt-5", "claude-4"])), ("restricted".to_string(), l(&["openai/o1-*"]))].into(),
        )
    }

    #[test]
    fn globs() {
        assert!(glob("openai/*", "openai/gpt-4o"));
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("openai/*", "azure/gpt-4o"));
        assert!(!glob("a*b", "a"));
        assert!(glob("gpt-4o", "gpt-4o"));
    }

    #[test]
    fn empty_lists_inherit() {
        assert_eq!(list_allows(&[], "x", &groups()), None);
        assert_eq!(list_allows(&l(&[ALL_TEAM_MODELS]), "x", &groups()), None);
    }

    #[test]
    fn exact_names_patterns_and_groups() {
        let g = groups();
        assert_eq!(list_allows(&l(&["demo"]), "demo", &g), Some(true));
        assert_eq!(list_allows(&l(&["demo"]), "other", &g), Some(false));
        assert_eq!(list_allows(&l(&["openai/*"]), "openai/gpt-4o", &g), Some(true));
        assert_eq!(list_allows(&l(&["beta"]), "claude-4", &g), Some(true));
        assert_eq!(list_allows(&l(&[ALL_PROXY_MODELS]), "whatever", &g), Some(true));
        assert_eq!(list_allows(&l(&[NO_DEFAULT_MODELS]), "demo", &g), Some(false));
    }

    #[test]
    fn the_more_specific_rule_wins() {
        let g = groups();
        let list = l(&["openai/*", "!openai/o1-*"]);
        assert_eq!(list_allows(&list, "openai/gpt-4o", &g), Some(true));
        assert_eq!(list_allows(&list, "openai/o1-mini", &g), Some(false));
        // An exclusion through a group, and an exact grant that beats it.
        let list = l(&["openai/*", "!restricted", "openai/o1-preview"]);
        assert_eq!(list_allows(&list, "openai/o1-mini", &g), Some(false));
        assert_eq!(list_allows(&list, "openai/o1-preview", &g), Some(true));
        // Ties go to the exclusion.
        assert_eq!(list_allows(&l(&["demo", "!demo"]), "demo", &g), Some(false));
        // all-proxy-models is the least specific allow.
        assert_eq!(list_allows(&l(&[ALL_PROXY_MODELS, "!secret"]), "secret", &g), Some(false));
    }
}
