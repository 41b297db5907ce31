//! End customers on the hot path: the customer a request names (`user`), from a cache.
//!
//! A customer never seen before is admitted at once with the default customer budget
//! (`litellm_settings.max_end_user_budget`, or the tier `max_end_user_budget_id`), and its
//! row is created by the ledger in the same transaction as its first spend record
//! (`INSERT … ON CONFLICT DO NOTHING`), so concurrent first requests create it once and the
//! hot path never writes to the database. Customer budget periods are anchored at the Unix
//! epoch, so `1d` is a UTC day and `1mo` a calendar month.
//!
//! Requests name customers freely, so the cache is bounded ([`MAX_CACHED`], least used
//! evicted) and a customer costs the store nothing but one read until a call of theirs is
//! admitted and recorded.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::memo::Memo;
use crate::error::GatewayError;
use crate::pricing::Nanos;
use crate::store::{Store, Table};
use crate::tenancy::{BudgetTier, Customer, Limits, Meta, from_row};

/// A customer and its effective limits (its own, else its tier's, else the defaults).
#[derive(Debug, Clone)]
pub struct CustomerEntry {
    pub customer: Customer,
    pub limits: Limits,
}

/// Defaults for customers without a budget of their own.
#[derive(Debug, Clone, Default)]
pub struct CustomerDefaults {
    /// `litellm_settings.max_end_user_budget`.
    pub max_budget: Option<Nanos>,
    /// `litellm_settings.max_end_user_budget_id`: a budget tier.
    pub budget_id: Option<String>,
}

pub struct CustomerCache {
    store: Arc<dyn Store>,
    defaults: CustomerDefaults,
    map: Memo<String, Arc<CustomerEntry>>,
}

/// The most customers cached at once.
pub const MAX_CACHED: u64 = 100_000;

/// The longest customer id accepted.
const MAX_ID_LEN: usize = 256;

impl CustomerCache {
    pub fn new(store: Arc<dyn Store>, defaults: CustomerDefaults) -> Self {
        Self { store, defaults, map: Memo::new(MAX_CACHED) }
    }

    async fn tier(&self, id: &str) -> Result<Option<Limits>, GatewayError> {
        Ok(self.store.get(Table::Budgets, id).await?.map(from_row::<BudgetTier>).transpose()?.map(|t| t.limits))
    }

    /// The effective limits: the customer's own budget, else its tier, else the default tier,
    /// else the default budget.
    async fn effective(&self, c: &Customer) -> Result<Limits, GatewayError> {
        let tier = match c.budget_id.as_ref().or(self.defaults.budget_id.as_ref()) {
            Some(b) => self.tier(b).await?,
            None => None,
        };
        let mut limits = super::budgets::with_tier(&c.limits, tier.as_ref());
        if limits.max_budget.is_none() {
            limits.max_budget = self.defaults.max_budget;
        }
        Ok(limits)
    }

    /// The customer named `id` (a provisional one if new); refused if blocked.
    pub async fn get(&self, id: &str) -> Result<Arc<CustomerEntry>, GatewayError> {
        if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
            return Err(GatewayError::invalid(
                "user",
                "user: the end customer id must be 1 to 256 characters, without control characters",
            ));
        }
        let entry = self
            .map
            .get_or_load(&id.to_owned(), || async {
                let customer = match self.store.get(Table::Customers, id).await? {
                    Some(row) => from_row::<Customer>(row)?,
                    None => provisional(id),
                };
                let limits = self.effective(&customer).await?;
                Ok(Arc::new(CustomerEntry { customer, limits }))
            })
            .await?;
        if entry.customer.blocked {
            return Err(
                GatewayError::permission_denied(format!("customer {id:?} is blocked")).with_reason("customer_blocked")
            );
        }
        Ok(entry)
    }

    pub async fn invalidate(&self, id: &str) {
        self.map.invalidate(&id.to_owned()).await;
    }

    /// Forgets every customer (a budget tier changed).
    pub fn invalidate_all(&self) {
        self.map.invalidate_all();
    }

    /// Customers cached now.
    pub fn len(&self) -> u64 {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The anchor of customer budget periods.
pub const CUSTOMER_ANCHOR: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

/// A customer first seen now; its row is written with its first spend record.
fn provisional(id: &str) -> Customer {
    Customer {
        user_id: id.to_owned(),
        alias: None,
        blocked: false,
        budget_id: None,
        limits: Limits::default(),
        models: vec![],
        allowed_model_region: None,
        default_model: None,
        metadata: Default::default(),
        managed_by: None,
        meta: Meta::new(Utc::now()),
    }
}
