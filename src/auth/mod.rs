//! Delegated Microsoft Entra sign-in for PAT owners.
//!
//! Owns: the device-code sign-in (`patrol login`), keeping each owner's refresh token in the secret store
//! (rotated on every use), and handing out access tokens for the Azure DevOps resource that are refreshed
//! proactively — at least five minutes before they expire — so a run of any length never sends an expired
//! token. `invalid_grant` / `interaction_required` become "owner must sign in again".
