//! The built-in rule (`policy.stage_order`): a stage starts only once the version's current
//! lifecycle stage is the one before it in the list, or a later one. Pure, checked before any
//! remote policy.

/// The refusal, named like a policy (`stage-order`) and saying which stage is required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "blocked by policy stage-order (policy.stage_order: {order}): stage {stage} starts only once \
     the version's current lifecycle stage is {required} or later, and it is {current}"
)]
pub struct StageOrderRefusal {
    pub stage: String,
    pub required: String,
    /// The current stage, or "none" when the version has no lifecycle yet.
    pub current: String,
    pub order: String,
}

/// May `stage` start when the version's current lifecycle stage is `current`? The first stage
/// of `order` always may, and so may a stage not in it; an empty order allows everything.
pub fn stage_order(
    order: &[String],
    stage: &str,
    current: Option<&str>,
) -> Result<(), StageOrderRefusal> {
    let position = |s: &str| order.iter().position(|o| o == s);
    let Some(wanted) = position(stage) else {
        return Ok(());
    };
    if wanted == 0 {
        return Ok(());
    }
    let reached = current.and_then(position);
    if reached.is_some_and(|r| r + 1 >= wanted) {
        return Ok(());
    }
    Err(StageOrderRefusal {
        stage: stage.to_owned(),
        required: order[wanted - 1].clone(),
        current: current.unwrap_or("none").to_owned(),
        order: order.join(", "),
    })
}
