//! Profiles (spec: "Profiles") and the user directory (spec: "User
//! directory").

use axum::extract::State;
use myelin_plugin_api::{Callback, RulesCallback, UserProfile};
use ruma::{
    UserId,
    api::client::{
        profile::{
            get_profile::v3 as get_profile, get_profile_field::v3 as get_profile_field,
            set_profile_field::v3 as set_profile_field,
        },
        user_directory::search_users::v3 as search_users,
    },
    profile::{ProfileFieldName, ProfileFieldValue},
};
use serde_json::Value;

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugin_hooks,
        ruma::{Ruma, RumaResponse},
    },
    rooms::pdu::EventDraft,
    state::AppState,
    storage::Profile,
};

async fn profile_of(state: &AppState, user: &UserId) -> ApiResult<Profile> {
    state
        .storage
        .profile(user.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Profile not found"))
}

/// `GET /profile/{userId}`
pub async fn get(
    State(state): State<AppState>,
    req: Ruma<get_profile::Request>,
) -> ApiResult<RumaResponse<get_profile::Response>> {
    let profile = profile_of(&state, &req.body.user_id).await?;
    let mut response = get_profile::Response::new();
    if let Some(name) = profile.displayname {
        response.set("displayname".to_owned(), name.into());
    }
    if let Some(url) = profile.avatar_url {
        response.set("avatar_url".to_owned(), url.into());
    }
    Ok(RumaResponse(response))
}

/// `GET /profile/{userId}/{field}`
pub async fn get_field(
    State(state): State<AppState>,
    req: Ruma<get_profile_field::Request>,
) -> ApiResult<RumaResponse<get_profile_field::Response>> {
    let profile = profile_of(&state, &req.body.user_id).await?;
    let value = match &req.body.field {
        ProfileFieldName::DisplayName => profile.displayname.map(ProfileFieldValue::DisplayName),
        ProfileFieldName::AvatarUrl => profile
            .avatar_url
            .map(|u| ProfileFieldValue::AvatarUrl(u.into())),
        _ => None,
    };
    let value = value.ok_or_else(|| MatrixError::not_found("Profile field not set"))?;
    Ok(RumaResponse(get_profile_field::Response::new(value)))
}

/// `PUT /profile/{userId}/{field}`: the user's own profile only; the new
/// name or avatar is sent to every room they are joined to.
pub async fn set_field(
    State(state): State<AppState>,
    req: Ruma<set_profile_field::Request>,
) -> ApiResult<RumaResponse<set_profile_field::Response>> {
    let user = &req.session().user_id;
    if req.body.user_id != *user {
        return Err(MatrixError::forbidden(
            "You may only change your own profile",
        ));
    }
    let mut profile = profile_of(&state, user).await?;
    let field = match &req.body.value {
        ProfileFieldValue::DisplayName(name) => {
            profile.displayname = Some(name.clone()).filter(|n| !n.is_empty());
            "displayname"
        }
        ProfileFieldValue::AvatarUrl(url) => {
            profile.avatar_url = Some(url.to_string()).filter(|u| !u.is_empty());
            "avatar_url"
        }
        _ => {
            return Err(MatrixError::bad_json(
                "Only displayname and avatar_url can be set",
            ));
        }
    };
    save_profile(&state, user, &profile, &[field], None, false).await?;
    Ok(RumaResponse(set_profile_field::Response::new()))
}

/// Stores a local user's new profile, tells the plugins
/// (`on_profile_update`; `by_admin` is looked up when `None`: whether the
/// user is a server admin, Synapse's meaning), then sends the changed
/// `fields` (`displayname`, `avatar_url`) to every room the user is joined
/// to. One room refusing the change (e.g. a power-level rule) does not undo
/// the profile or the other rooms.
pub(crate) async fn save_profile(
    state: &AppState,
    user: &UserId,
    profile: &Profile,
    fields: &[&str],
    by_admin: Option<bool>,
    deactivation: bool,
) -> ApiResult<()> {
    state.storage.set_profile(user.as_str(), profile).await?;
    // As in Synapse: plugins hear of the new profile before it reaches the
    // rooms.
    if state
        .plugins
        .current()
        .wants_rule(RulesCallback::OnProfileUpdate)
    {
        let by_admin = match by_admin {
            Some(by_admin) => by_admin,
            None => state
                .storage
                .user(user.as_str())
                .await?
                .is_some_and(|u| u.is_admin),
        };
        plugin_hooks::profile_updated(state, user.as_str(), profile, by_admin, deactivation).await;
    }

    for room_id in state
        .storage
        .rooms_with_membership(user.as_str(), "join")
        .await?
    {
        let Ok(room_id) = ruma::RoomId::parse(&room_id) else {
            continue;
        };
        let Some(current) = state
            .storage
            .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
            .await?
        else {
            continue;
        };
        let mut content = current.pdu.content_value();
        for field in fields {
            let value = match *field {
                "displayname" => &profile.displayname,
                "avatar_url" => &profile.avatar_url,
                _ => continue,
            };
            match value {
                Some(value) => content[*field] = Value::String(value.clone()),
                None => {
                    content.as_object_mut().map(|c| c.remove(*field));
                }
            }
        }
        let draft = EventDraft::state("m.room.member", user.as_str(), content);
        if let Err(err) = state
            .rooms
            .with_room(&room_id, async |room| room.append(user, &draft, None).await)
            .await
        {
            tracing::warn!(%room_id, error = %err, "could not update member event after a profile change");
        }
    }
    Ok(())
}

/// `POST /user_directory/search`
pub async fn search_users(
    State(state): State<AppState>,
    req: Ruma<search_users::Request>,
) -> ApiResult<RumaResponse<search_users::Response>> {
    let limit = u64::from(req.body.limit).clamp(1, 100) as i64;
    let mut rows = state
        .storage
        .search_user_directory(req.session().user_id.as_str(), &req.body.search_term, limit)
        .await?;
    let limited = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if state
        .plugins
        .current()
        .wants(Callback::CheckUsernameForSpam)
    {
        let mut kept = Vec::with_capacity(rows.len());
        for (user_id, profile) in rows {
            let candidate = UserProfile {
                user_id: user_id.clone(),
                display_name: profile.displayname.clone(),
                avatar_url: profile.avatar_url.clone(),
            };
            if !state
                .plugins
                .current()
                .check_username_for_spam(&candidate)
                .await
            {
                kept.push((user_id, profile));
            }
        }
        rows = kept;
    }
    let results = rows
        .into_iter()
        .filter_map(|(user_id, profile)| {
            let mut user = search_users::User::new(UserId::parse(user_id).ok()?);
            user.display_name = profile.displayname;
            user.avatar_url = profile.avatar_url.map(Into::into);
            Some(user)
        })
        .collect();
    let response = search_users::Response::new(results, limited);
    Ok(RumaResponse(response))
}
