//! Token estimates, for streams whose provider reports no usage and for the mock provider.
//!
//! The estimate is deterministic: about four characters a token, the rule of thumb OpenAI
//! publishes, plus OpenAI's per-message overhead. A real tokenizer per model family replaces
//! this where budgets need a tight bound.

use crate::chat::{ChatRequest, Content, ContentPart, Message};

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
/// (OpenAI's families, through tiktoken): the same message overhead as [`estimate_prompt`]
/// (the parameters passed through are [`extra_upper_bound`]'s). `None` for models without a
/// known tokenizer, and for requests with images or audio, which a text tokenizer does not
/// count.
pub fn count_prompt(model: &str, request: &ChatRequest) -> Option<u64> {
    if media_parts(request) > 0 || has_audio(request) {
        return None;
    }
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

/// An upper bound on a request's prompt tokens, images aside: every token of a BPE tokenizer
/// is at least one byte, so the bytes of everything the provider reads bound it — each
/// message's text, name, tool calls, image and audio data, and the tools (as JSON) — plus the
/// per-message overhead. Parameters passed through are [`extra_upper_bound`]'s. An image's tokens do not follow
/// its bytes (a URL is short); the caller adds [`media_parts`] times the provider's per-image
/// maximum.
pub fn prompt_upper_bound(request: &ChatRequest) -> u64 {
    let bytes = |s: &str| s.len() as u64;
    let content = |c: &Content| match c {
        Content::Text(t) => bytes(t),
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => bytes(text),
                ContentPart::ImageUrl { image_url } => bytes(&image_url.url),
                ContentPart::InputAudio { input_audio } => bytes(&input_audio.data),
            })
            .sum(),
    };
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            4 + m.content.as_ref().map_or(0, content)
                + m.name.as_deref().map_or(0, bytes)
                + m.tool_calls.as_ref().map_or(0, json_len)
                + m.tool_call_id.as_deref().map_or(0, bytes)
        })
        .sum();
    let tools: u64 = request.tools.iter().flatten().map(json_len).sum();
    messages + tools + 3
}

/// A bound on the tokens of the parameters passed through unchanged (`extra`), which only
/// OpenAI-shaped upstreams receive (and may bill, e.g. `functions`).
pub fn extra_upper_bound(request: &ChatRequest) -> u64 {
    if request.extra.is_empty() { 0 } else { json_len(&request.extra) }
}

/// The image parts of a request's messages.
pub fn media_parts(request: &ChatRequest) -> u64 {
    parts(request).filter(|p| matches!(p, ContentPart::ImageUrl { .. })).count() as u64
}

fn has_audio(request: &ChatRequest) -> bool {
    parts(request).any(|p| matches!(p, ContentPart::InputAudio { .. }))
}

fn parts(request: &ChatRequest) -> impl Iterator<Item = &ContentPart> {
    request
        .messages
        .iter()
        .filter_map(|m| match &m.content {
            Some(Content::Parts(parts)) => Some(parts.iter()),
            _ => None,
        })
        .flatten()
}

/// A bound on the tokens of generated text: its count with the model's tokenizer where it has
/// one, else its bytes (never fewer than its tokens).
pub fn completion_bound(model: &str, text: &str) -> u64 {
    match tiktoken_rs::bpe_for_model(model) {
        Ok(bpe) => bpe.encode_ordinary(text).len() as u64,
        Err(_) => text.len() as u64,
    }
}

/// The length of a value's JSON, without keeping the JSON.
fn json_len<T: serde::Serialize>(value: &T) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_covers_everything_the_provider_reads() {
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "input_audio", "input_audio": {"data": "QUJD".repeat(1000), "format": "wav"}}
            ]}],
        }))
        .unwrap();
        assert!(prompt_upper_bound(&request) > 4000, "the audio's bytes count");
        assert_eq!(media_parts(&request), 1);
        assert_eq!(count_prompt("gpt-4o", &request), None, "a text tokenizer does not count media");
        let mut with_extra = request.clone();
        with_extra.extra.insert("functions".into(), serde_json::json!([{"name": "x".repeat(500)}]));
        assert!(extra_upper_bound(&with_extra) >= 500);
        assert_eq!(extra_upper_bound(&request), 0);
        assert_eq!(completion_bound("unknown-model", "ab cd"), 5);
    }

    #[test]
    fn four_characters_a_token() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("abc"), 1);
        assert_eq!(estimate_text("abcd"), 1);
        assert_eq!(estimate_text("abcde"), 2);
    }
}
