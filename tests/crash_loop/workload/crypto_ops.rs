//! Cryptographic steps over the keys the workload made: Encrypt, GenerateDataKey, ReEncrypt and Decrypt, each checked against the journal.

use super::*;

// === cryptography ===

fn claim_usable(ctx: &Ctx, rng: &mut StdRng) -> Option<(usize, String)> {
    let mut journal = ctx.journal();
    let index = journal.claim_key(rng, |k| {
        k.role == Role::Stable && k.state.value == State::Enabled
    })?;
    Some((index, journal.keys[index].id.clone()))
}

pub(super) async fn encrypt(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((index, id)) = claim_usable(ctx, rng) else {
        return Flow::Idle;
    };
    let flow = encrypt_under(ctx, rng, index, &id).await;
    ctx.journal().release_key(index);
    flow
}

/// Encrypt under a key the caller holds; journals the ciphertext.
pub(super) async fn encrypt_under(ctx: &Ctx, rng: &mut StdRng, _index: usize, id: &str) -> Flow {
    let plaintext = random_plaintext(rng);
    let context = random_context(rng);
    let answer = call(
        ctx,
        "Encrypt",
        ctx.kms
            .encrypt()
            .key_id(id)
            .plaintext(Blob::new(plaintext.clone()))
            .set_encryption_context(context_opt(&context))
            .send(),
    )
    .await;
    match answer {
        Answer::Ok(out) => {
            let blob = out
                .ciphertext_blob()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            journal_cipher(ctx, id, blob, context, plaintext, None);
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "Encrypt", id, &code, &message),
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("Encrypt");
            Flow::Stop
        }
    }
}

fn journal_cipher(
    ctx: &Ctx,
    key: &str,
    blob: Vec<u8>,
    context: HashMap<String, String>,
    plaintext: Vec<u8>,
    answered_material: Option<&str>,
) {
    let Some(material) = material_of(&blob) else {
        ctx.error(format!(
            "a ciphertext under {key} is too short for its header"
        ));
        return;
    };
    if let Some(answered) = answered_material {
        if answered != material {
            ctx.error(format!(
                "KeyMaterialId {answered} in the answer, {material} in the ciphertext"
            ));
        }
    }
    ctx.journal().ciphers.push(Cipher {
        key: key.to_string(),
        material,
        context,
        plaintext,
        blob,
        checked: false,
    });
}

pub(super) async fn generate_data_key(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((index, id)) = claim_usable(ctx, rng) else {
        return Flow::Idle;
    };
    let context = random_context(rng);
    let answer = call(
        ctx,
        "GenerateDataKey",
        ctx.kms
            .generate_data_key()
            .key_id(&id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_opt(&context))
            .send(),
    )
    .await;
    let flow = match answer {
        Answer::Ok(out) => {
            let blob = out
                .ciphertext_blob()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            let plaintext = out
                .plaintext()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            journal_cipher(ctx, &id, blob, context, plaintext, out.key_material_id());
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "GenerateDataKey", &id, &code, &message),
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("GenerateDataKey");
            Flow::Stop
        }
    };
    ctx.journal().release_key(index);
    flow
}

/// Claims the key of a random journaled ciphertext under a usable stable key.
fn claim_cipher(ctx: &Ctx, rng: &mut StdRng) -> Option<(usize, Cipher)> {
    let mut journal = ctx.journal();
    let usable: Vec<usize> = journal
        .ciphers
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            journal.keys.iter().any(|k| {
                k.id == c.key
                    && k.role == Role::Stable
                    && !k.busy
                    && !k.deleted
                    && k.state.value == State::Enabled
            })
        })
        .map(|(i, _)| i)
        .collect();
    if usable.is_empty() {
        return None;
    }
    let cipher = journal.ciphers[usable[rng.random_range(0..usable.len())]].clone();
    let index = journal.key_index(&cipher.key)?;
    journal.keys[index].busy = true;
    Some((index, cipher))
}

pub(super) async fn re_encrypt(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((source, cipher)) = claim_cipher(ctx, rng) else {
        return Flow::Idle;
    };
    let Some((destination, destination_id)) = claim_usable(ctx, rng) else {
        ctx.journal().release_key(source);
        return Flow::Idle;
    };
    let context = random_context(rng);
    let answer = call(
        ctx,
        "ReEncrypt",
        ctx.kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(cipher.blob.clone()))
            .set_source_encryption_context(context_opt(&cipher.context))
            .destination_key_id(&destination_id)
            .set_destination_encryption_context(context_opt(&context))
            .send(),
    )
    .await;
    let flow = match answer {
        Answer::Ok(out) => {
            let blob = out
                .ciphertext_blob()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            journal_cipher(
                ctx,
                &destination_id,
                blob,
                context,
                cipher.plaintext.clone(),
                out.destination_key_material_id(),
            );
            Flow::Continue
        }
        Answer::Refused { code, message } => {
            refused(ctx, "ReEncrypt", &cipher.key, &code, &message)
        }
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("ReEncrypt");
            Flow::Stop
        }
    };
    let mut journal = ctx.journal();
    journal.release_key(source);
    journal.release_key(destination);
    flow
}

pub(super) async fn decrypt(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((index, cipher)) = claim_cipher(ctx, rng) else {
        return Flow::Idle;
    };
    let answer = call(
        ctx,
        "Decrypt",
        ctx.kms
            .decrypt()
            .ciphertext_blob(Blob::new(cipher.blob.clone()))
            .set_encryption_context(context_opt(&cipher.context))
            .send(),
    )
    .await;
    let flow = match answer {
        Answer::Ok(out) => {
            if out.plaintext().map(|p| p.as_ref()) != Some(cipher.plaintext.as_slice()) {
                ctx.error(format!(
                    "Decrypt under {} returned another plaintext",
                    cipher.key
                ));
            }
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "Decrypt", &cipher.key, &code, &message),
        Answer::Lost(_) => Flow::Stop,
    };
    ctx.journal().release_key(index);
    flow
}
