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
//!
//! Names and patterns in a list match the name a call asks for. An access group grants the
//! deployments it holds, so it matches by what the call will reach: the model name in
//! `model_list` the router sends it to (a wildcard deployment's pattern for a name the
//! wildcard serves). A group holding `openai/*` therefore does not grant `openai/o1-mini`
//! when a more specific `openai/o1-*` deployment serves that name.

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

/// What a call reaches: the model name it asks for, and the `model_list` name the router sends
/// it to (None for a name no deployment serves).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    pub group: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// A name that is itself a `model_list` name.
    pub fn listed(name: &'a str) -> Self {
        Target { name, group: Some(name) }
    }
}

/// How specific a rule is: exact names beat every pattern; patterns rank by literal length.
fn specificity(pattern: &str) -> usize {
    if pattern.contains('*') { pattern.chars().filter(|c| *c != '*').count() } else { usize::MAX }
}

/// What a list says about a call reaching `target`: `None` when it restricts nothing (empty,
/// or only inheritance markers), else whether it allows the call.
pub fn list_allows(list: &[String], target: &Target<'_>, groups: &AccessGroups) -> Option<bool> {
    let model = target.name;
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
            _ => match groups.0.get(name) {
                // A group: the deployments it holds, matched by where the call is routed (by
                // name only for a name no deployment serves).
                Some(members) => {
                    for m in members {
                        let hit = match target.group {
                            Some(group) => m == group,
                            None => glob(m, model),
                        };
                        if hit {
                            matches.push((specificity(m), allow));
                        }
                    }
                }
                None => {
                    if glob(name, model) {
                        matches.push((specificity(name), allow));
                    }
                }
            },
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

    fn at(name: &str) -> Target<'_> {
        Target { name, group: None }
    }

    #[test]
    fn empty_lists_inherit() {
        assert_eq!(list_allows(&[], &at("x"), &groups()), None);
        assert_eq!(list_allows(&l(&[ALL_TEAM_MODELS]), &at("x"), &groups()), None);
    }

    #[test]
    fn exact_names_patterns_and_groups() {
        let g = groups();
        assert_eq!(list_allows(&l(&["demo"]), &at("demo"), &g), Some(true));
        assert_eq!(list_allows(&l(&["demo"]), &at("other"), &g), Some(false));
        assert_eq!(list_allows(&l(&["openai/*"]), &at("openai/gpt-4o"), &g), Some(true));
        assert_eq!(list_allows(&l(&["beta"]), &Target::listed("claude-4"), &g), Some(true));
        assert_eq!(list_allows(&l(&[ALL_PROXY_MODELS]), &at("whatever"), &g), Some(true));
        assert_eq!(list_allows(&l(&[NO_DEFAULT_MODELS]), &at("demo"), &g), Some(false));
    }

    #[test]
    fn the_more_specific_rule_wins() {
        let g = groups();
        let list = l(&["openai/*", "!openai/o1-*"]);
        assert_eq!(list_allows(&list, &at("openai/gpt-4o"), &g), Some(true));
        assert_eq!(list_allows(&list, &at("openai/o1-mini"), &g), Some(false));
        // An exclusion through a group, and an exact grant that beats it.
        let o1 = Target { name: "openai/o1-mini", group: Some("openai/o1-*") };
        let list = l(&["openai/*", "!restricted", "openai/o1-preview"]);
        assert_eq!(list_allows(&list, &o1, &g), Some(false));
        let preview = Target { name: "openai/o1-preview", group: Some("openai/o1-*") };
        assert_eq!(list_allows(&list, &preview, &g), Some(true));
        // Ties go to the exclusion.
        assert_eq!(list_allows(&l(&["demo", "!demo"]), &at("demo"), &g), Some(false));
        // all-proxy-models is the least specific allow.
        assert_eq!(list_allows(&l(&[ALL_PROXY_MODELS, "!secret"]), &at("secret"), &g), Some(false));
    }

    #[test]
    fn a_group_grants_what_its_deployments_serve() {
        let g = AccessGroups(
            [("default".to_string(), l(&["openai/*"])), ("restricted".to_string(), l(&["openai/o1-*"]))].into(),
        );
        let routed = |name, group| Target { name, group: Some(group) };
        // The name matches the group's wildcard, but the router sends it to o1-*: not granted.
        assert_eq!(list_allows(&l(&["default"]), &routed("openai/o1-2024-12-17", "openai/o1-*"), &g), Some(false));
        assert_eq!(list_allows(&l(&["default"]), &routed("openai/gpt-4o", "openai/*"), &g), Some(true));
        assert_eq!(list_allows(&l(&["restricted"]), &routed("openai/o1-2024-12-17", "openai/o1-*"), &g), Some(true));
        assert_eq!(
            list_allows(&l(&["default", "!restricted"]), &routed("openai/o1-x", "openai/o1-*"), &g),
            Some(false)
        );
    }
}
