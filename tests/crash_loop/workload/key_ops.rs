//! Key management steps: create, churn, schedule deletion, state changes, rotations, grants and aliases, each checked against the journal.

use super::*;

// === keys ===

pub(super) async fn create_key(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    if ctx.journal().stable_keys() >= ctx.stable_keys {
        return churn(ctx, rng, false).await;
    }
    let description = format!("crash-{:08x}", rng.random::<u32>());
    match call(
        ctx,
        "CreateKey",
        ctx.kms.create_key().description(&description).send(),
    )
    .await
    {
        Answer::Ok(out) => {
            let Some(id) = out.key_metadata().map(|m| m.key_id().to_string()) else {
                ctx.error("CreateKey answered without KeyMetadata".into());
                return Flow::Continue;
            };
            ctx.journal()
                .keys
                .push(KeyEntry::new(id, Role::Stable, description));
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "CreateKey", "-", &code, &message),
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("CreateKey");
            Flow::Stop
        }
    }
}

/// CreateKey, then (with `extras`) an Encrypt under it, ScheduleKeyDeletion, and sometimes
/// CancelKeyDeletion followed by a second ScheduleKeyDeletion.
pub(super) async fn churn(ctx: &Ctx, rng: &mut StdRng, extras: bool) -> Flow {
    let description = format!("churn-{:08x}", rng.random::<u32>());
    let id = match call(
        ctx,
        "CreateKey",
        ctx.kms.create_key().description(&description).send(),
    )
    .await
    {
        Answer::Ok(out) => match out.key_metadata().map(|m| m.key_id().to_string()) {
            Some(id) => id,
            None => {
                ctx.error("CreateKey answered without KeyMetadata".into());
                return Flow::Continue;
            }
        },
        Answer::Refused { code, message } => {
            return refused(ctx, "CreateKey", "-", &code, &message)
        }
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("CreateKey");
            return Flow::Stop;
        }
    };
    let index = {
        let mut journal = ctx.journal();
        let mut entry = KeyEntry::new(id.clone(), Role::Churn, description);
        entry.busy = true;
        journal.keys.push(entry);
        journal.keys.len() - 1
    };
    let flow = churn_steps(ctx, rng, index, &id, extras).await;
    ctx.journal().release_key(index);
    flow
}

async fn churn_steps(ctx: &Ctx, rng: &mut StdRng, index: usize, id: &str, extras: bool) -> Flow {
    if extras {
        if let Flow::Stop = encrypt_under(ctx, rng, index, id).await {
            return Flow::Stop;
        }
    }
    if let Flow::Stop = schedule_deletion(ctx, rng, index, id).await {
        return Flow::Stop;
    }
    if !extras || rng.random_bool(0.6) {
        return Flow::Continue;
    }
    match call(
        ctx,
        "CancelKeyDeletion",
        ctx.kms.cancel_key_deletion().key_id(id).send(),
    )
    .await
    {
        Answer::Ok(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.set(State::Disabled);
            journal.keys[index].deletion_date = None;
        }
        Answer::Refused { code, message } => {
            // The waiting period may already be over: then the key is gone, as acknowledged.
            let mut journal = ctx.journal();
            let due = journal.keys[index]
                .deletion_date
                .is_some_and(|d| now_epoch() >= d - 0.5);
            if code == "NotFoundException" && due {
                journal.keys[index].deleted = true;
                return Flow::Continue;
            }
            drop(journal);
            return refused(ctx, "CancelKeyDeletion", id, &code, &message);
        }
        Answer::Lost(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.doubt(State::Disabled);
            journal.left_in_doubt("CancelKeyDeletion");
            return Flow::Stop;
        }
    }
    schedule_deletion(ctx, rng, index, id).await
}

async fn schedule_deletion(ctx: &Ctx, rng: &mut StdRng, index: usize, id: &str) -> Flow {
    let window = rng.random_range(7..=30);
    match call(
        ctx,
        "ScheduleKeyDeletion",
        ctx.kms
            .schedule_key_deletion()
            .key_id(id)
            .pending_window_in_days(window)
            .send(),
    )
    .await
    {
        Answer::Ok(out) => {
            let date = out.deletion_date().map(|d| d.as_secs_f64());
            let mut journal = ctx.journal();
            journal.keys[index].state.set(State::PendingDeletion);
            journal.keys[index].deletion_date = date;
            Flow::Continue
        }
        Answer::Refused { code, message } => {
            refused(ctx, "ScheduleKeyDeletion", id, &code, &message)
        }
        Answer::Lost(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.doubt(State::PendingDeletion);
            journal.left_in_doubt("ScheduleKeyDeletion");
            Flow::Stop
        }
    }
}

pub(super) async fn state_change(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let claimed = ctx.journal().claim_key(rng, |k| k.role == Role::Stable);
    let Some(index) = claimed else {
        return Flow::Idle;
    };
    let (id, state) = {
        let journal = ctx.journal();
        (
            journal.keys[index].id.clone(),
            journal.keys[index].state.value,
        )
    };
    let flow = match (state, rng.random::<f64>()) {
        (State::Disabled, r) if r < 0.7 => {
            let answer = call(ctx, "EnableKey", ctx.kms.enable_key().key_id(&id).send()).await;
            apply_state(ctx, index, &id, "EnableKey", answer, State::Enabled)
        }
        (State::Enabled, r) if r < 0.3 => {
            let answer = call(ctx, "DisableKey", ctx.kms.disable_key().key_id(&id).send()).await;
            apply_state(ctx, index, &id, "DisableKey", answer, State::Disabled)
        }
        _ => {
            let description = format!("described-{:08x}", rng.random::<u32>());
            let answer = call(
                ctx,
                "UpdateKeyDescription",
                ctx.kms
                    .update_key_description()
                    .key_id(&id)
                    .description(&description)
                    .send(),
            )
            .await;
            match answer {
                Answer::Ok(_) => {
                    ctx.journal().keys[index].description.set(description);
                    Flow::Continue
                }
                Answer::Refused { code, message } => {
                    refused(ctx, "UpdateKeyDescription", &id, &code, &message)
                }
                Answer::Lost(_) => {
                    let mut journal = ctx.journal();
                    journal.keys[index].description.doubt(description);
                    journal.left_in_doubt("UpdateKeyDescription");
                    Flow::Stop
                }
            }
        }
    };
    ctx.journal().release_key(index);
    flow
}

fn apply_state<T>(
    ctx: &Ctx,
    index: usize,
    id: &str,
    operation: &'static str,
    answer: Answer<T>,
    to: State,
) -> Flow {
    match answer {
        Answer::Ok(_) => {
            ctx.journal().keys[index].state.set(to);
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, operation, id, &code, &message),
        Answer::Lost(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.doubt(to);
            journal.left_in_doubt(operation);
            Flow::Stop
        }
    }
}

pub(super) async fn rotation(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let claimed = ctx.journal().claim_key(rng, |k| {
        k.role == Role::Stable && k.state.value == State::Enabled
    });
    let Some(index) = claimed else {
        return Flow::Idle;
    };
    let (id, on_demand_left) = {
        let journal = ctx.journal();
        let key = &journal.keys[index];
        // AWS allows 10 on-demand rotations per key; the gateway refuses the 11th.
        let used = key.on_demand + key.on_demand_in_doubt;
        (key.id.clone(), used < ON_DEMAND_ROTATION_LIMIT)
    };
    let r: f64 = rng.random();
    let flow = if r < 0.5 && on_demand_left {
        match call(
            ctx,
            "RotateKeyOnDemand",
            ctx.kms.rotate_key_on_demand().key_id(&id).send(),
        )
        .await
        {
            Answer::Ok(_) => {
                ctx.journal().keys[index].on_demand += 1;
                learn_rotations(ctx, index, &id).await
            }
            Answer::Refused { code, message } => {
                refused(ctx, "RotateKeyOnDemand", &id, &code, &message)
            }
            Answer::Lost(_) => {
                let mut journal = ctx.journal();
                journal.keys[index].on_demand_in_doubt += 1;
                journal.left_in_doubt("RotateKeyOnDemand");
                Flow::Stop
            }
        }
    } else {
        let enable = r < 0.8;
        let answer = if enable {
            let days = rng.random_range(90..=180);
            call(
                ctx,
                "EnableKeyRotation",
                ctx.kms
                    .enable_key_rotation()
                    .key_id(&id)
                    .rotation_period_in_days(days)
                    .send(),
            )
            .await
            .map_unit()
        } else {
            call(
                ctx,
                "DisableKeyRotation",
                ctx.kms.disable_key_rotation().key_id(&id).send(),
            )
            .await
            .map_unit()
        };
        let operation = if enable {
            "EnableKeyRotation"
        } else {
            "DisableKeyRotation"
        };
        match answer {
            Answer::Ok(()) => {
                ctx.journal().keys[index].rotation_enabled.set(enable);
                Flow::Continue
            }
            Answer::Refused { code, message } => refused(ctx, operation, &id, &code, &message),
            Answer::Lost(_) => {
                let mut journal = ctx.journal();
                journal.keys[index].rotation_enabled.doubt(enable);
                journal.left_in_doubt(operation);
                Flow::Stop
            }
        }
    };
    ctx.journal().release_key(index);
    flow
}

impl<T> Answer<T> {
    fn map_unit(self) -> Answer<()> {
        match self {
            Answer::Ok(_) => Answer::Ok(()),
            Answer::Refused { code, message } => Answer::Refused { code, message },
            Answer::Lost(e) => Answer::Lost(e),
        }
    }
}

/// The key's rotations as listed now: (on-demand count, every rotation material id).
pub async fn list_rotations(
    ctx: &Ctx,
    id: &str,
) -> Answer<(u32, std::collections::BTreeSet<String>)> {
    let mut on_demand = 0;
    let mut materials = std::collections::BTreeSet::new();
    let mut marker: Option<String> = None;
    for _ in 0..1000 {
        let answer = call(
            ctx,
            "ListKeyRotations",
            ctx.kms
                .list_key_rotations()
                .key_id(id)
                .limit(1000)
                .set_marker(marker.clone())
                .send(),
        )
        .await;
        let out = match answer {
            Answer::Ok(out) => out,
            Answer::Refused { code, message } => return Answer::Refused { code, message },
            Answer::Lost(e) => return Answer::Lost(e),
        };
        for rotation in out.rotations() {
            if rotation.rotation_type() == Some(&RotationType::OnDemand) {
                on_demand += 1;
            }
            if let Some(m) = rotation.key_material_id() {
                materials.insert(m.to_string());
            }
        }
        match out.next_marker() {
            Some(m) if out.truncated() => marker = Some(m.to_string()),
            _ => return Answer::Ok((on_demand, materials)),
        }
    }
    Answer::Refused {
        code: "harness".into(),
        message: "ListKeyRotations did not end".into(),
    }
}

/// After an acknowledged rotation: remember the key's rotation materials.
async fn learn_rotations(ctx: &Ctx, index: usize, id: &str) -> Flow {
    match list_rotations(ctx, id).await {
        Answer::Ok((_, materials)) => {
            ctx.journal().keys[index].materials.extend(materials);
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "ListKeyRotations", id, &code, &message),
        Answer::Lost(_) => Flow::Stop,
    }
}

// === grants ===

const GRANTEE: &str = "arn:aws:iam::111122223333:role/crash-grantee";
const RETIREE: &str = "arn:aws:iam::111122223333:role/crash-retiree";

pub(super) async fn grant_change(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let claimed = ctx.journal().claim_key(rng, |k| {
        k.role == Role::Stable && k.state.value == State::Enabled
    });
    let Some(index) = claimed else {
        return Flow::Idle;
    };
    let (id, live) = {
        let journal = ctx.journal();
        (
            journal.keys[index].id.clone(),
            journal.keys[index].live_grants(),
        )
    };
    let flow = if live.is_empty() || (live.len() < ctx.grants_per_key && rng.random_bool(0.6)) {
        match call(
            ctx,
            "CreateGrant",
            ctx.kms
                .create_grant()
                .key_id(&id)
                .grantee_principal(GRANTEE)
                .retiring_principal(RETIREE)
                .operations(GrantOperation::Encrypt)
                .operations(GrantOperation::Decrypt)
                .send(),
        )
        .await
        {
            Answer::Ok(out) => match out.grant_id() {
                Some(grant) => {
                    ctx.journal().keys[index]
                        .grants
                        .insert(grant.to_string(), Doubtful::new(true));
                    Flow::Continue
                }
                None => {
                    ctx.error(format!("CreateGrant on {id} answered without GrantId"));
                    Flow::Continue
                }
            },
            Answer::Refused { code, message } => refused(ctx, "CreateGrant", &id, &code, &message),
            Answer::Lost(_) => {
                // The grant id was never seen: an extra grant after the restart is fine.
                ctx.journal().left_in_doubt("CreateGrant");
                Flow::Stop
            }
        }
    } else {
        let grant = live[rng.random_range(0..live.len())].clone();
        let retire = rng.random_bool(0.5);
        let (operation, answer) = if retire {
            (
                "RetireGrant",
                call(
                    ctx,
                    "RetireGrant",
                    ctx.kms.retire_grant().key_id(&id).grant_id(&grant).send(),
                )
                .await
                .map_unit(),
            )
        } else {
            (
                "RevokeGrant",
                call(
                    ctx,
                    "RevokeGrant",
                    ctx.kms.revoke_grant().key_id(&id).grant_id(&grant).send(),
                )
                .await
                .map_unit(),
            )
        };
        match answer {
            Answer::Ok(()) => {
                if let Some(g) = ctx.journal().keys[index].grants.get_mut(&grant) {
                    g.set(false);
                }
                Flow::Continue
            }
            Answer::Refused { code, message } => refused(ctx, operation, &id, &code, &message),
            Answer::Lost(_) => {
                let mut journal = ctx.journal();
                if let Some(g) = journal.keys[index].grants.get_mut(&grant) {
                    g.doubt(false);
                }
                journal.left_in_doubt(operation);
                Flow::Stop
            }
        }
    };
    ctx.journal().release_key(index);
    flow
}

// === aliases ===

pub(super) async fn alias_change(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let create = {
        let journal = ctx.journal();
        journal.live_aliases() < ctx.alias_limit && rng.random_bool(0.5)
    };
    if create {
        let (name, target) = {
            let mut journal = ctx.journal();
            let Some(target) = journal.random_stable_key(rng) else {
                return Flow::Idle;
            };
            journal.alias_seq += 1;
            let name = format!("alias/crash-{}-{}", journal.alias_seq, rng.random::<u16>());
            journal.aliases.insert(
                name.clone(),
                AliasEntry {
                    target: Doubtful::new(None),
                    busy: true,
                },
            );
            (name, target)
        };
        let answer = call(
            ctx,
            "CreateAlias",
            ctx.kms
                .create_alias()
                .alias_name(&name)
                .target_key_id(&target)
                .send(),
        )
        .await;
        return finish_alias(ctx, &name, "CreateAlias", answer.map_unit(), Some(target));
    }
    let claimed = {
        let mut journal = ctx.journal();
        journal.claim_alias(rng).map(|name| {
            let current = journal.aliases[&name].target.value.clone();
            let other = journal.random_stable_key(rng);
            (name, current, other)
        })
    };
    let Some((name, current, other)) = claimed else {
        return Flow::Idle;
    };
    match other {
        Some(target) if rng.random_bool(0.6) && Some(&target) != current.as_ref() => {
            let answer = call(
                ctx,
                "UpdateAlias",
                ctx.kms
                    .update_alias()
                    .alias_name(&name)
                    .target_key_id(&target)
                    .send(),
            )
            .await;
            finish_alias(ctx, &name, "UpdateAlias", answer.map_unit(), Some(target))
        }
        _ => {
            let answer = call(
                ctx,
                "DeleteAlias",
                ctx.kms.delete_alias().alias_name(&name).send(),
            )
            .await;
            finish_alias(ctx, &name, "DeleteAlias", answer.map_unit(), None)
        }
    }
}

fn finish_alias(
    ctx: &Ctx,
    name: &str,
    operation: &'static str,
    answer: Answer<()>,
    to: Option<String>,
) -> Flow {
    let flow = {
        let mut journal = ctx.journal();
        match answer {
            Answer::Ok(()) => {
                if let Some(a) = journal.aliases.get_mut(name) {
                    a.target.set(to);
                }
                Flow::Continue
            }
            Answer::Refused { code, message } => {
                drop(journal);
                refused(ctx, operation, name, &code, &message)
            }
            Answer::Lost(_) => {
                if let Some(a) = journal.aliases.get_mut(name) {
                    a.target.doubt(to);
                }
                journal.left_in_doubt(operation);
                Flow::Stop
            }
        }
    };
    ctx.journal().release_alias(name);
    flow
}
