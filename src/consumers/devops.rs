//! Azure DevOps consumers — service connections and variable groups — written with the Function App's own
//! Entra identity (managed identity / client credentials / developer tools) for the Azure DevOps resource
//! `499b84ac-1321-427f-aa17-267ca6975798`, never with a PAT owner's delegated token. Azure DevOps offers no
//! conditional update for these objects, so every write is read–compare–write on `modificationDate` /
//! `modifiedOn`: a person's edit since patrol's read is a conflict, never overwritten.

use super::policy::{Consumer, ConsumerKind, ObjectRef};
use super::state::UseEvidence;
use super::{ConsumerError, WriteContext};
use azure_core::credentials::TokenCredential;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use url::Url;

/// The scope of an app-only token for Azure DevOps.
pub const DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";
const ENDPOINT_API: &str = "7.1";
const GROUP_API: &str = "7.1";
const HISTORY_API: &str = "7.1-preview.1";

/// Service connections and variable groups over HTTP.
pub struct DevOpsConsumers {
    client: reqwest::Client,
    /// `https://dev.azure.com/` (or the emulator).
    base: Url,
    credential: Arc<dyn TokenCredential>,
    /// The object `prepare` read (id, JSON), by consumer id, for the write that follows it.
    prepared: super::Prepared<(String, Value)>,
}

impl std::fmt::Debug for DevOpsConsumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevOpsConsumers").field("base", &self.base.as_str()).finish()
    }
}

fn rfc3339(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_owned)
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    crate::timestamp::parse_opt(s)
}

impl DevOpsConsumers {
    pub fn new(client: reqwest::Client, devops_url: &Url, credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            client,
            base: crate::devops::probe::organization_base(devops_url),
            credential,
            prepared: Default::default(),
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        u.set_path(&format!("{}/{}", self.base.path().trim_end_matches('/'), path));
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        u
    }

    /// One call; `Ok(None)` for a 2xx `null` body (Azure DevOps' answer for an unknown object on GET).
    async fn call(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Option<Value>, ConsumerError> {
        let token = self.credential.get_token(&[DEVOPS_SCOPE], None).await.map_err(|e| {
            ConsumerError::NotConfigured(format!("no Entra token for Azure DevOps (the Function App's identity): {e}"))
        })?;
        let mut req = self
            .client
            .request(method, url)
            .bearer_auth(token.token.secret())
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ConsumerError::Transient(format!("{what}: could not reach Azure DevOps: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ConsumerError::Transient(format!("{what}: {e}")))?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) && status != 203 {
            return Ok(parsed.filter(|v| !v.is_null()));
        }
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()))
            .map(|m| m.chars().take(300).collect::<String>())
            .unwrap_or_default();
        let text = format!("{what}: HTTP {status} {message}");
        Err(match status {
            203 | 401 | 403 => ConsumerError::Forbidden(text),
            404 => ConsumerError::NotFound(text),
            409 | 412 => ConsumerError::Conflict(text),
            429 | 500..=599 => ConsumerError::Transient(text),
            _ => ConsumerError::Refused(text),
        })
    }

    // ---- service connections ----

    async fn endpoint(&self, c: &Consumer) -> Result<(String, Value), ConsumerError> {
        let ConsumerKind::DevopsServiceConnection { organization, project, connection, .. } = &c.kind else {
            return Err(ConsumerError::Refused("not a service connection".into()));
        };
        let id = match connection {
            ObjectRef::Id(id) => id.clone(),
            ObjectRef::Name(name) => {
                let url = self.url(
                    &format!("{organization}/{project}/_apis/serviceendpoint/endpoints"),
                    &[("endpointNames", name), ("api-version", ENDPOINT_API)],
                );
                let list = self.call(reqwest::Method::GET, url, None, &c.id).await?.unwrap_or(Value::Null);
                let found = list.get("value").and_then(|v| v.as_array()).and_then(|a| {
                    a.iter()
                        .find(|e| e.get("name").and_then(|n| n.as_str()).is_some_and(|n| n.eq_ignore_ascii_case(name)))
                });
                found.and_then(|e| e.get("id").and_then(|i| i.as_str()).map(str::to_owned)).ok_or_else(|| {
                    ConsumerError::NotFound(format!(
                        "{}: no service connection named {name:?} in {organization}/{project}",
                        c.id
                    ))
                })?
            }
        };
        let url = self.url(
            &format!("{organization}/{project}/_apis/serviceendpoint/endpoints/{id}"),
            &[("api-version", ENDPOINT_API)],
        );
        let e = self.call(reqwest::Method::GET, url, None, &c.id).await?.ok_or_else(|| {
            ConsumerError::NotFound(format!("{}: service connection {id} does not exist (deleted?)", c.id))
        })?;
        Ok((id, e))
    }

    fn check_endpoint(c: &Consumer, e: &Value) -> Result<(), ConsumerError> {
        let ConsumerKind::DevopsServiceConnection { connection_type, scheme, .. } = &c.kind else { return Ok(()) };
        let ty = e.get("type").and_then(|v| v.as_str()).unwrap_or_default();
        let sc = e.pointer("/authorization/scheme").and_then(|v| v.as_str()).unwrap_or_default();
        if !ty.eq_ignore_ascii_case(connection_type) || !sc.eq_ignore_ascii_case(scheme) {
            return Err(ConsumerError::Refused(format!(
                "{}: the connection is {ty}/{sc}, the policy says {connection_type}/{scheme}; patrol does not write a connection of another type",
                c.id
            )));
        }
        Ok(())
    }

    async fn write_endpoint(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
    ) -> Result<Option<String>, ConsumerError> {
        let ConsumerKind::DevopsServiceConnection { organization, parameter, .. } = &c.kind else {
            return Err(ConsumerError::Refused("not a service connection".into()));
        };
        let (id, mut e) = match self.prepared.take(&c.id) {
            Some(read) if rfc3339(&read.1, "modificationDate").as_deref() == before => read,
            _ => self.endpoint(c).await?,
        };
        Self::check_endpoint(c, &e)?;
        let now = rfc3339(&e, "modificationDate");
        if before.is_some() && now.as_deref() != before {
            return Err(ConsumerError::Conflict(format!(
                "{}: changed by {} at {} since patrol read it; patrol did not overwrite it",
                c.id,
                e.pointer("/modifiedBy/uniqueName")
                    .or(e.pointer("/modifiedBy/displayName"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("someone"),
                now.as_deref().unwrap_or("?")
            )));
        }
        let params = e.pointer_mut("/authorization/parameters").and_then(|p| p.as_object_mut()).ok_or_else(|| {
            ConsumerError::Refused(format!("{}: the connection has no authorization parameters", c.id))
        })?;
        let key =
            params.keys().find(|k| k.eq_ignore_ascii_case(parameter)).cloned().unwrap_or_else(|| parameter.clone());
        params.insert(key, Value::String(value.expose_secret().to_owned()));
        let url =
            self.url(&format!("{organization}/_apis/serviceendpoint/endpoints/{id}"), &[("api-version", ENDPOINT_API)]);
        let answer = self.call(reqwest::Method::PUT, url, Some(&e), &c.id).await;
        drop(e);
        let answer = answer?.unwrap_or(Value::Null);
        Ok(rfc3339(&answer, "modificationDate"))
    }

    async fn endpoint_evidence(
        &self,
        c: &Consumer,
        since: OffsetDateTime,
    ) -> Result<Option<UseEvidence>, ConsumerError> {
        let ConsumerKind::DevopsServiceConnection { organization, project, .. } = &c.kind else { return Ok(None) };
        let (id, _) = self.endpoint(c).await?;
        let url = self.url(
            &format!("{organization}/{project}/_apis/serviceendpoint/{id}/executionhistory"),
            &[("top", "50"), ("api-version", HISTORY_API)],
        );
        let h = self.call(reqwest::Method::GET, url, None, &c.id).await?.unwrap_or(Value::Null);
        let runs = h.get("value").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        for r in runs {
            let d = r.get("data").unwrap_or(&Value::Null);
            let ok = d.get("result").and_then(|v| v.as_str()).is_some_and(|s| s.eq_ignore_ascii_case("succeeded"));
            let start = d.get("startTime").and_then(|v| v.as_str()).and_then(parse_time);
            if let (true, Some(at)) = (ok, start)
                && at >= since
            {
                let def = d.pointer("/definition/name").and_then(|v| v.as_str()).unwrap_or("a pipeline");
                let run = d.get("id").map(|v| v.to_string()).unwrap_or_default();
                let plan = d.get("planType").and_then(|v| v.as_str()).unwrap_or("run");
                return Ok(Some(UseEvidence {
                    at,
                    what: format!("{plan} {run} of {def} succeeded with the connection at {}", fmt(at)),
                }));
            }
        }
        Ok(None)
    }

    // ---- variable groups ----

    async fn group(&self, c: &Consumer) -> Result<(String, Value), ConsumerError> {
        let ConsumerKind::DevopsVariableGroup { organization, project, group, .. } = &c.kind else {
            return Err(ConsumerError::Refused("not a variable group".into()));
        };
        let g = match group {
            ObjectRef::Id(id) => {
                let url = self.url(
                    &format!("{organization}/{project}/_apis/distributedtask/variablegroups/{id}"),
                    &[("api-version", GROUP_API)],
                );
                self.call(reqwest::Method::GET, url, None, &c.id).await?
            }
            ObjectRef::Name(name) => {
                let url = self.url(
                    &format!("{organization}/{project}/_apis/distributedtask/variablegroups"),
                    &[("groupName", name), ("api-version", GROUP_API)],
                );
                let list = self.call(reqwest::Method::GET, url, None, &c.id).await?.unwrap_or(Value::Null);
                list.get("value").and_then(|v| v.as_array()).and_then(|a| {
                    a.iter()
                        .find(|g| g.get("name").and_then(|n| n.as_str()).is_some_and(|n| n.eq_ignore_ascii_case(name)))
                        .cloned()
                })
            }
        }
        .ok_or_else(|| {
            ConsumerError::NotFound(format!(
                "{}: variable group {group} does not exist in {organization}/{project} (deleted?)",
                c.id
            ))
        })?;
        let id = g.get("id").map(|v| v.to_string()).unwrap_or_default();
        Ok((id, g))
    }

    fn check_group(c: &Consumer, g: &Value) -> Result<(), ConsumerError> {
        let ConsumerKind::DevopsVariableGroup { variable, .. } = &c.kind else { return Ok(()) };
        if g.get("type").and_then(|v| v.as_str()).is_some_and(|t| t.eq_ignore_ascii_case("AzureKeyVault")) {
            return Err(ConsumerError::Refused(format!(
                "{}: the group is linked to Key Vault; declare it with key_vault_linked = true (nothing to write)",
                c.id
            )));
        }
        let Some(name) = variable else { return Ok(()) };
        let vars = g.get("variables").and_then(|v| v.as_object());
        let var = vars.and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v));
        match var {
            None => Err(ConsumerError::Refused(format!(
                "{}: the group has no variable {name}; add it as a secret variable (patrol does not create variables)",
                c.id
            ))),
            Some(v) if v.get("isSecret").and_then(|s| s.as_bool()) != Some(true) => {
                Err(ConsumerError::Refused(format!(
                    "{}: variable {name} is not secret; patrol never writes a PAT into a plain variable — make it secret first",
                    c.id
                )))
            }
            Some(_) => Ok(()),
        }
    }

    async fn write_group(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
    ) -> Result<Option<String>, ConsumerError> {
        let ConsumerKind::DevopsVariableGroup { organization, variable: Some(name), .. } = &c.kind else {
            return Err(ConsumerError::Refused("nothing to write for this group".into()));
        };
        let (id, g) = match self.prepared.take(&c.id) {
            Some(read) if rfc3339(&read.1, "modifiedOn").as_deref() == before => read,
            _ => self.group(c).await?,
        };
        Self::check_group(c, &g)?;
        let now = rfc3339(&g, "modifiedOn");
        if before.is_some() && now.as_deref() != before {
            return Err(ConsumerError::Conflict(format!(
                "{}: changed by {} at {} since patrol read it; patrol did not overwrite it",
                c.id,
                g.pointer("/modifiedBy/uniqueName")
                    .or(g.pointer("/modifiedBy/displayName"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("someone"),
                now.as_deref().unwrap_or("?")
            )));
        }
        // The PUT replaces the whole variable set: every other secret goes back as null ("keep"), plain
        // variables with their values, and only this one with the new value.
        let mut vars = serde_json::Map::new();
        for (k, v) in g.get("variables").and_then(|v| v.as_object()).cloned().unwrap_or_default() {
            let secret = v.get("isSecret").and_then(|s| s.as_bool()) == Some(true);
            let mut out = json!({ "isSecret": secret });
            if let Some(ro) = v.get("isReadOnly") {
                out["isReadOnly"] = ro.clone();
            }
            out["value"] = if k.eq_ignore_ascii_case(name) {
                Value::String(value.expose_secret().to_owned())
            } else if secret {
                Value::Null
            } else {
                v.get("value").cloned().unwrap_or(Value::Null)
            };
            vars.insert(k, out);
        }
        let mut body = json!({
            "name": g.get("name").cloned().unwrap_or(Value::Null),
            "description": g.get("description").cloned().unwrap_or(Value::Null),
            "type": g.get("type").cloned().unwrap_or(json!("Vsts")),
            "variables": Value::Object(vars),
        });
        if let Some(p) = g.get("providerData").filter(|p| !p.is_null()) {
            body["providerData"] = p.clone();
        }
        if let Some(refs) = g.get("variableGroupProjectReferences") {
            body["variableGroupProjectReferences"] = refs.clone();
        }
        let url = self
            .url(&format!("{organization}/_apis/distributedtask/variablegroups/{id}"), &[("api-version", GROUP_API)]);
        let answer = self.call(reqwest::Method::PUT, url, Some(&body), &c.id).await;
        drop(body);
        let answer = answer?.unwrap_or(Value::Null);
        Ok(rfc3339(&answer, "modifiedOn"))
    }

    // ---- `patrol consumers --check`: read-only ----

    /// Checks a service connection or variable group without writing it (`super::check`).
    pub async fn check(&self, c: &Consumer, p: &mut super::check::Probe) -> Result<(), ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { organization, project, parameter, .. } => {
                let (id, e) = self.endpoint(c).await?;
                p.reachable = Some(true);
                Self::check_endpoint(c, &e)?;
                let has_parameter = e
                    .pointer("/authorization/parameters")
                    .and_then(|v| v.as_object())
                    .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(parameter)));
                if !has_parameter {
                    return Err(ConsumerError::Refused(format!(
                        "{}: service connection {id} has no {parameter} authorization parameter",
                        c.id
                    )));
                }
                p.right_type = Some(true);
                p.note(format!(
                    "service connection {id} is {}/{}; patrol writes its {parameter} parameter",
                    e.get("type").and_then(|v| v.as_str()).unwrap_or("?"),
                    e.pointer("/authorization/scheme").and_then(|v| v.as_str()).unwrap_or("?"),
                ));
                let url = self.url(
                    &format!("{organization}/{project}/_apis/serviceendpoint/endpoints/{id}"),
                    &[("actionFilter", "manage"), ("api-version", ENDPOINT_API)],
                );
                if self.call(reqwest::Method::GET, url, None, &c.id).await?.is_none() {
                    p.writable = Some(false);
                    return Err(ConsumerError::Forbidden(format!(
                        "{}: patrol's identity may read service connection {id} but is not an Administrator of it (it cannot update it)",
                        c.id
                    )));
                }
                p.writable = Some(true);
                p.note("patrol's identity may update it (Administrator)");
                Ok(())
            }
            ConsumerKind::DevopsVariableGroup { organization, project, key_vault_linked, .. } => {
                let (id, g) = self.group(c).await?;
                p.reachable = Some(true);
                let ty = g.get("type").and_then(|v| v.as_str()).unwrap_or("Vsts").to_owned();
                if *key_vault_linked {
                    if !ty.eq_ignore_ascii_case("AzureKeyVault") {
                        return Err(ConsumerError::Refused(format!(
                            "{}: declared key_vault_linked, but group {id} is a plain ({ty}) group; declare the secret variable instead",
                            c.id
                        )));
                    }
                    p.right_type = Some(true);
                    p.note(format!("variable group {id} is linked to Key Vault: it reads the vault, nothing to write"));
                    return Ok(());
                }
                Self::check_group(c, &g)?;
                p.right_type = Some(true);
                p.note(format!("variable group {id} holds the declared secret variable"));
                let name = g.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                let url = self.url(
                    &format!("{organization}/{project}/_apis/distributedtask/variablegroups"),
                    &[("groupName", &name), ("actionFilter", "manage"), ("api-version", GROUP_API)],
                );
                let list = self.call(reqwest::Method::GET, url, None, &c.id).await?.unwrap_or(Value::Null);
                let manages = list
                    .get("value")
                    .and_then(|v| v.as_array())
                    .is_some_and(|a| a.iter().any(|g| g.get("id").map(|v| v.to_string()).as_deref() == Some(&id)));
                if !manages {
                    p.writable = Some(false);
                    return Err(ConsumerError::Forbidden(format!(
                        "{}: patrol's identity may read variable group {id} but is not an Administrator of it (it cannot update it)",
                        c.id
                    )));
                }
                p.writable = Some(true);
                p.note("patrol's identity may update it (Administrator)");
                Ok(())
            }
            _ => Err(ConsumerError::Refused("not an Azure DevOps consumer".into())),
        }
    }

    // ---- the ConsumerWriter operations for both kinds ----

    pub async fn prepare(&self, c: &Consumer) -> Result<Option<String>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } => {
                let (id, e) = self.endpoint(c).await?;
                Self::check_endpoint(c, &e)?;
                let marker = rfc3339(&e, "modificationDate");
                self.prepared.put(&c.id, (id, e));
                Ok(marker)
            }
            ConsumerKind::DevopsVariableGroup { .. } => {
                let (id, g) = self.group(c).await?;
                Self::check_group(c, &g)?;
                let marker = rfc3339(&g, "modifiedOn");
                self.prepared.put(&c.id, (id, g));
                Ok(marker)
            }
            _ => Err(ConsumerError::Refused("not an Azure DevOps consumer".into())),
        }
    }

    pub async fn landed(&self, c: &Consumer, before: Option<&str>) -> Result<Option<Option<String>>, ConsumerError> {
        // Without a marker read before the write there is nothing to compare: write again.
        let Some(before) = before else { return Ok(None) };
        let now = match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } => rfc3339(&self.endpoint(c).await?.1, "modificationDate"),
            ConsumerKind::DevopsVariableGroup { .. } => rfc3339(&self.group(c).await?.1, "modifiedOn"),
            _ => None,
        };
        Ok(now.filter(|n| n != before).map(Some))
    }

    pub async fn write(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
    ) -> Result<Option<String>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } => self.write_endpoint(c, value, before).await,
            ConsumerKind::DevopsVariableGroup { .. } => self.write_group(c, value, before).await,
            _ => Err(ConsumerError::Refused("not an Azure DevOps consumer".into())),
        }
    }

    pub async fn evidence(
        &self,
        c: &Consumer,
        since: OffsetDateTime,
        _: &WriteContext,
    ) -> Result<Option<UseEvidence>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } => self.endpoint_evidence(c, since).await,
            _ => Ok(None),
        }
    }
}

fn fmt(t: OffsetDateTime) -> String {
    crate::timestamp::rfc3339(t)
}
