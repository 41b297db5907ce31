//! Who is calling and whether they may: identity (keys, cached), then admission.
//!
//! Pure logic over [`crate::store`] records, testable without a network. Admission is the
//! stage later governance (budgets, rate limits, model groups) slots into.

pub mod duration;
pub mod identity;

pub use identity::{Caller, IdentityCache};

use crate::error::GatewayError;

/// Checks that `caller` may call the model named `model`. Today: the key's model allow-list
/// (empty means every model).
pub fn admit(caller: &Caller, model: &str) -> Result<(), GatewayError> {
    if let Some(key) = caller.key()
        && !key.models.is_empty()
        && !key.models.iter().any(|m| m == model)
    {
        return Err(GatewayError::permission_denied(format!(
            "key {} may not call model {model:?}; it may call: {}",
            key.key_id,
            key.models.join(", ")
        ))
        .with_reason("key_model_access_denied")
        .with_param("model"));
    }
    Ok(())
}
