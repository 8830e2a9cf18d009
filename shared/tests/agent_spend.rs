//! The daily agent budget against the real Redis: reservations, refusal, settlement once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::test_config;
use redis::AsyncCommands;
use shared::agents::{OverBudget, SpendLedger, Usd, daily_spend_key};

#[tokio::test]
async fn reservations_stop_at_the_budget_and_settle_once_to_the_reported_cost() {
    let config = test_config();
    let mut redis = shared::redis::connect(&config.redis).await.unwrap();
    let prefix = config.redis.key_prefix.clone();
    let ledger = SpendLedger::new(redis.clone(), prefix.clone());
    let (user, day) = ("u1", "2026-11-24");
    let usd = Usd::from_dollars;

    assert_eq!(
        ledger.reserve(user, day, usd(0.6), usd(1.0)).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        ledger.reserve(user, day, usd(0.6), usd(1.0)).await.unwrap(),
        Err(OverBudget { spent: usd(0.6) })
    );
    // Another day, another budget.
    assert_eq!(
        ledger
            .reserve(user, "2026-11-25", usd(0.6), usd(1.0))
            .await
            .unwrap(),
        Ok(())
    );

    // The run cost 0.1 of its 0.6: 0.5 comes back, once however often it is settled.
    for _ in 0..2 {
        ledger
            .settle("e1", user, day, Some(usd(0.6)), Some(usd(0.1)))
            .await
            .unwrap();
    }
    let key = daily_spend_key(&prefix, user, day);
    let spent: u64 = redis.get(&key).await.unwrap();
    assert_eq!(spent, usd(0.1).micros);
    assert_eq!(
        ledger.reserve(user, day, usd(0.6), usd(1.0)).await.unwrap(),
        Ok(())
    );

    // Without a reported cost the reservation stands; with no budget key nothing is settled.
    ledger
        .settle("e2", user, day, Some(usd(0.6)), None)
        .await
        .unwrap();
    ledger
        .settle("e3", "nobody", day, Some(usd(0.6)), Some(usd(0.0)))
        .await
        .unwrap();
    let spent: u64 = redis.get(&key).await.unwrap();
    assert_eq!(spent, usd(0.7).micros);
    let nobody: Option<u64> = redis
        .get(daily_spend_key(&prefix, "nobody", day))
        .await
        .unwrap();
    assert_eq!(nobody, None);
}
