//! Third-party identifiers (spec: "Adding Account Administrative Contact
//! Information"): listing and removing the user's own. Identifiers are
//! bound by the admin API (`PUT /_synapse/admin/v2/users/{userId}`); this
//! server runs no validation flow (no e-mail or SMS tokens) and talks to no
//! identity server.

use axum::extract::State;
use http::StatusCode;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{
        client::account::{
            ThirdPartyIdRemovalStatus, delete_3pid::v3 as delete_3pid, get_3pids::v3 as get_3pids,
        },
        error::ErrorKind,
    },
    thirdparty::{Medium, ThirdPartyIdentifierInit},
};

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugin_hooks,
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::{now_ms, threepids::Threepid},
};

/// Synapse's longest e-mail address.
const MAX_EMAIL_ADDRESS_LENGTH: usize = 500;

/// The address as stored: e-mail addresses lower-cased as Synapse's
/// `canonicalise_email` does (`local@domain`, surrounding spaces trimmed);
/// 400 `M_INVALID_PARAM` for another medium than `email` or `msisdn`, or an
/// e-mail address without exactly one `@`.
pub fn canonical_address(medium: &str, address: &str) -> ApiResult<String> {
    match medium {
        "email" => {
            let address = address.trim();
            let (local, domain) = address
                .split_once('@')
                .filter(|(_, domain)| !domain.contains('@'))
                .ok_or_else(|| MatrixError::invalid_param("Unable to parse email address"))?;
            let canonical = format!("{}@{}", local.to_lowercase(), domain.to_lowercase());
            if canonical.len() > MAX_EMAIL_ADDRESS_LENGTH {
                return Err(MatrixError::invalid_param("Email address is too long"));
            }
            Ok(canonical)
        }
        "msisdn" => Ok(address.to_owned()),
        other => Err(MatrixError::invalid_param(format!(
            "'{other}' is not a valid value for 'medium'"
        ))),
    }
}

/// Binds an identifier (already canonical) to the user, then tells the
/// plugins. 409 `M_THREEPID_IN_USE` when it belongs to another user.
pub async fn bind(state: &AppState, user_id: &str, medium: &str, address: &str) -> ApiResult<()> {
    let now = now_ms();
    let threepid = Threepid {
        medium: medium.to_owned(),
        address: address.to_owned(),
        validated_at: now,
        added_at: now,
    };
    if !state.storage.add_threepid(user_id, &threepid).await? {
        let owner = state.storage.user_by_threepid(medium, address).await?;
        if owner.as_deref() == Some(user_id) {
            return Ok(());
        }
        return Err(in_use());
    }
    tracing::info!(%user_id, %medium, "bound a third-party identifier");
    plugin_hooks::threepid_added(state, user_id, medium, address).await;
    Ok(())
}

/// Removes an identifier (already canonical) from the user and, if the
/// user had it, tells the plugins; whether it was removed.
pub async fn unbind(
    state: &AppState,
    user_id: &str,
    medium: &str,
    address: &str,
) -> ApiResult<bool> {
    let removed = state
        .storage
        .delete_threepid(user_id, medium, address)
        .await?;
    if removed {
        tracing::info!(%user_id, %medium, "removed a third-party identifier");
        plugin_hooks::threepid_removed(state, user_id, medium, address).await;
    }
    Ok(removed)
}

pub fn in_use() -> MatrixError {
    MatrixError::new(
        StatusCode::CONFLICT,
        ErrorKind::ThreepidInUse,
        "Threepid already in use",
    )
}

fn millis(ts: i64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts.max(0) as u64))
}

/// `GET /_matrix/client/v3/account/3pid`
pub async fn get_threepids(
    State(state): State<AppState>,
    req: Ruma<get_3pids::Request>,
) -> ApiResult<RumaResponse<get_3pids::Response>> {
    let user_id = req.session().user_id.as_str();
    let threepids = state
        .storage
        .user_threepids(user_id)
        .await?
        .into_iter()
        .map(|threepid| {
            ThirdPartyIdentifierInit {
                address: threepid.address,
                medium: Medium::from(threepid.medium.as_str()),
                validated_at: millis(threepid.validated_at),
                added_at: millis(threepid.added_at),
            }
            .into()
        })
        .collect();
    Ok(RumaResponse(get_3pids::Response::new(threepids)))
}

/// `POST /_matrix/client/v3/account/3pid/delete`: removes the identifier
/// from the account (nothing happens when the user does not have it);
/// with no identity server, `id_server_unbind_result` is `no-support`.
pub async fn delete_threepid(
    State(state): State<AppState>,
    req: Ruma<delete_3pid::Request>,
) -> ApiResult<RumaResponse<delete_3pid::Response>> {
    let user_id = req.session().user_id.as_str();
    let medium = req.body.medium.as_str();
    let address = canonical_address(medium, &req.body.address)?;
    unbind(&state, user_id, medium, &address).await?;
    Ok(RumaResponse(delete_3pid::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}
