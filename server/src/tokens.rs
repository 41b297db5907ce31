//! Token estimates, for streams whose provider reports no usage and for the mock provider.
//!
//! The estimate is deterministic: about four characters a token, the rule of thumb OpenAI
//! publishes, plus OpenAI's per-message overhead. A real tokenizer per model family replaces
//! this where budgets need a tight bound.

use crate::chat::{ChatRequest, Message};

/// Tokens in a text: one per four characters, rounded up.
pub fn estimate_text(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Tokens one message takes: its text, its name, its tool calls, and 4 of overhead.
pub fn estimate_message(m: &Message) -> u64 {
    let mut n = 4;
    if let Some(c) = &m.content {
        n += estimate_text(&c.text());
    }
    if let Some(name) = &m.name {
        n += estimate_text(name);
    }
    for call in m.tool_calls.iter().flatten() {
        n += estimate_text(&call.function.name) + estimate_text(&call.function.arguments);
    }
    n
}

/// Prompt tokens of a request: every message, the tool definitions, and 3 to prime the reply.
pub fn estimate_prompt(request: &ChatRequest) -> u64 {
    let messages: u64 = request.messages.iter().map(estimate_message).sum();
    let tools: u64 = request
        .tools
        .iter()
        .flatten()
        .map(|t| {
            estimate_text(&t.function.name)
                + t.function.description.as_deref().map_or(0, estimate_text)
                + t.function.parameters.as_ref().map_or(0, |p| estimate_text(&p.to_string()))
        })
        .sum();
    messages + tools + 3
}

/// A request's prompt tokens counted with the model's real tokenizer, when the model has one
/// (OpenAI's families, through tiktoken): the same message overhead as [`estimate_prompt`].
/// `None` for models without a known tokenizer.
pub fn count_prompt(model: &str, request: &ChatRequest) -> Option<u64> {
    let bpe = tiktoken_rs::bpe_for_model(model).ok()?;
    let count = |s: &str| bpe.encode_ordinary(s).len() as u64;
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            4 + m.content.as_ref().map_or(0, |c| count(&c.text()))
                + m.name.as_deref().map_or(0, count)
                + m.tool_calls
                    .iter()
                    .flatten()
                    .map(|t| count(&t.function.name) + count(&t.function.arguments))
                    .sum::<u64>()
        })
        .sum();
    let tools: u64 = request.tools.iter().flatten().map(|t| serde_json::to_string(t).map_or(0, |s| count(&s))).sum();
    Some(messages + tools + 3)
}

/// An upper bound on a request's prompt tokens: every token of a BPE tokenizer is at least
/// one byte, so the UTF-8 length of the text (plus the per-message overhead) bounds it.
pub fn prompt_upper_bound(request: &ChatRequest) -> u64 {
    let bytes = |s: &str| s.len() as u64;
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            4 + m.content.as_ref().map_or(0, |c| bytes(&c.text()))
                + m.name.as_deref().map_or(0, bytes)
                + m.tool_calls
                    .iter()
                    .flatten()
                    .map(|t| bytes(&t.function.name) + bytes(&t.function.arguments))
                    .sum::<u64>()
        })
        .sum();
    let tools: u64 = request.tools.iter().flatten().map(|t| serde_json::to_string(t).map_or(0, |s| bytes(&s))).sum();
    messages + tools + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_characters_a_token() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("abc"), 1);
        assert_eq!(estimate_text("abcd"), 1);
        assert_eq!(estimate_text("abcde"), 2);
    }
}
