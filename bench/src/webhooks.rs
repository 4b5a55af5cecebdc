//! The webhooks the bench sends: a body with a unique delivery id, and the
//! header lines that sign it as its provider does. Every scenario of a run
//! (the bridge, the limits, the peer, the consumers) gets the same kind.

use serde_json::{Value, json};

/// The secret every bench source signs with.
pub(crate) const SECRET: &str = "whsec_bench_secret_0123456789";

/// The kind of webhook a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Webhook {
    /// A ~2 KB Stripe `payment_intent.succeeded` with 40 metadata fields,
    /// signed in `Stripe-Signature` (timestamp and HMAC-SHA256).
    Stripe,
    /// A ~9 KB GitHub `push` of three commits, with the whole repository,
    /// owner and sender objects GitHub sends, signed in
    /// `X-Hub-Signature-256` and identified by `X-GitHub-Delivery`; keyed by
    /// repository, 50 of them.
    GithubPush,
}

impl Webhook {
    /// The bridge's source name, the last segment of the URL.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::GithubPush => "github",
        }
    }

    /// The topic the bridge produces these to.
    pub(crate) fn topic(self) -> &'static str {
        match self {
            Self::Stripe => "webhooks.stripe.payment_intent.succeeded",
            Self::GithubPush => "webhooks.github.push",
        }
    }

    /// The registry subject of that topic's records.
    pub(crate) fn subject(self) -> String {
        format!("{}-value", self.topic())
    }

    /// The bridge's `[sources.*]` tables: both kinds, so that any bridge of
    /// the bench takes either.
    pub(crate) fn sources_config(secret_file: &std::path::Path) -> String {
        let secret = secret_file.display();
        format!(
            "[sources.stripe]\nprovider = \"stripe\"\nsecrets_file = \"{secret}\"\nkey_pointer = \"/data/object/id\"\nversion_pointer = \"/api_version\"\n\
             [sources.github]\nprovider = \"github\"\nsecrets_file = \"{secret}\"\nkey_pointer = \"/repository/full_name\"\n"
        )
    }

    /// What the run sends, for its report: the kind, a body's size and the signature header.
    pub(crate) fn describe(self) -> String {
        let bytes = self.signed(0, 0).0.len();
        match self {
            Self::Stripe => format!("Stripe payment_intent.succeeded, {bytes} bytes, Stripe-Signature"),
            Self::GithubPush => format!("GitHub push of 3 commits, {bytes} bytes, X-Hub-Signature-256"),
        }
    }

    /// Webhook `n` of the run: its body and its signed header lines
    /// (`name: value\r\n` each). `run` keeps ids unique across the bench's runs.
    pub(crate) fn signed(self, n: usize, run: i64) -> (Vec<u8>, String) {
        match self {
            Self::Stripe => {
                let body = stripe_event(n, run);
                let t = chrono::Utc::now().timestamp().to_string();
                let mac = bridge::verify::mac(
                    bridge::verify::Algorithm::Sha256,
                    SECRET.as_bytes(),
                    &[t.as_bytes(), b".", &body],
                );
                let headers = format!("stripe-signature: t={t},v1={}\r\n", hex::encode(mac));
                (body, headers)
            }
            Self::GithubPush => {
                let body = github_push(n);
                let mac = bridge::verify::mac(bridge::verify::Algorithm::Sha256, SECRET.as_bytes(), &[&body]);
                // GitHub's delivery ids are GUIDs; this one is unique per run and webhook.
                let delivery = format!("{:08x}-0000-4000-8000-{n:012x}", run as u32);
                let headers = format!(
                    "x-github-event: push\r\nx-github-delivery: {delivery}\r\nx-hub-signature-256: sha256={}\r\n",
                    hex::encode(mac)
                );
                (body, headers)
            }
        }
    }
}

/// A ~2 KB Stripe-style event with a unique id.
fn stripe_event(n: usize, run: i64) -> Vec<u8> {
    let mut metadata = serde_json::Map::new();
    for i in 0..40 {
        metadata.insert(format!("field_{i:02}"), Value::String(format!("value-{n}-{i:04}-padding")));
    }
    let now = chrono::Utc::now().timestamp();
    serde_json::to_vec(&json!({
        "id": format!("evt_bench_{n}_{run}"), "object": "event", "api_version": "2024-06-20", "created": now,
        "type": "payment_intent.succeeded", "livemode": false, "pending_webhooks": 1,
        "request": {"id": format!("req_{n}"), "idempotency_key": null},
        "data": {"object": {
            "id": format!("pi_bench_{}", n % 1000), "object": "payment_intent", "amount": 1000 + n as i64, "amount_received": 1000 + n as i64,
            "currency": "usd", "status": "succeeded", "customer": format!("cus_{}", n % 97), "created": now - 5,
            "description": "Benchmark order", "payment_method": "pm_card_visa", "latest_charge": format!("ch_{n}"),
            "livemode": false, "metadata": metadata
        }}
    }))
    .unwrap_or_default()
}

/// A GitHub account object as push payloads carry it (`owner`, `sender`).
fn github_user(login: &str, id: u64) -> Value {
    let api = format!("https://api.github.com/users/{login}");
    json!({
        "name": login, "email": format!("{login}@users.noreply.github.com"), "login": login, "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"), "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "", "url": api, "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/followers"), "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"), "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"), "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"), "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"), "type": "User", "user_view_type": "public",
        "site_admin": false
    })
}

/// A commit as push payloads carry it.
fn github_commit(repo: &str, n: usize, k: usize, timestamp: &str) -> Value {
    let id = format!("{:040x}", (n as u128) << 8 | k as u128);
    json!({
        "id": id, "tree_id": format!("{:040x}", (n as u128) << 9 | k as u128), "distinct": true,
        "message": format!("Handle webhook retries in the sync worker ({n}.{k})\n\nRetries are deduplicated by delivery id, so a redelivery no longer writes a second row."),
        "timestamp": timestamp, "url": format!("https://github.com/{repo}/commit/{id}"),
        "author": {"name": "Mona Lisa Octocat", "email": "mona@github.com", "username": "octocat"},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": [format!("src/sync/retry_{k}.rs")], "removed": [],
        "modified": ["src/sync/mod.rs", "src/sync/worker.rs", "CHANGELOG.md"]
    })
}

/// A ~9 KB GitHub push of three commits to one of 50 repositories.
fn github_push(n: usize) -> Vec<u8> {
    let (owner, name) = ("octo-org", format!("service-{:02}", n % 50));
    let repo = format!("{owner}/{name}");
    let api = format!("https://api.github.com/repos/{repo}");
    let now = chrono::Utc::now();
    let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let commits: Vec<Value> = (0..3).map(|k| github_commit(&repo, n, k, &timestamp)).collect();
    let (before, after) = (format!("{:040x}", (n as u128) << 8 | 0xff), commits[2]["id"].clone());
    let mut repository = json!({
        "id": 700_000_000 + n % 50, "node_id": format!("R_kgDOK{}", n % 50), "name": name, "full_name": repo,
        "private": true, "owner": github_user(owner, 9_919), "html_url": format!("https://github.com/{repo}"),
        "description": "Payments service", "fork": false, "url": format!("https://github.com/{repo}"),
        "created_at": 1_700_000_000, "updated_at": "2026-11-20T09:00:00Z", "pushed_at": now.timestamp(),
        "git_url": format!("git://github.com/{repo}.git"), "ssh_url": format!("git@github.com:{repo}.git"),
        "clone_url": format!("https://github.com/{repo}.git"), "svn_url": format!("https://github.com/{repo}"),
    });
    // In two parts: one `json!` this long passes the macro's recursion limit.
    let counts = json!({
        "homepage": null, "size": 4_821, "stargazers_count": 12, "watchers_count": 12, "language": "Rust",
        "has_issues": true, "has_projects": false, "has_downloads": true, "has_wiki": false, "has_pages": false,
        "has_discussions": false, "forks_count": 1, "mirror_url": null, "archived": false, "disabled": false,
        "open_issues_count": 3, "license": null, "allow_forking": false, "is_template": false,
        "web_commit_signoff_required": false, "topics": ["payments", "rust"], "visibility": "private",
        "forks": 1, "open_issues": 3, "watchers": 12, "default_branch": "main", "stargazers": 12,
        "master_branch": "main", "organization": owner
    });
    if let (Some(repository), Value::Object(counts)) = (repository.as_object_mut(), counts) {
        repository.extend(counts);
    }
    // The API URL templates GitHub puts in every repository object.
    for (field, path) in [
        ("forks_url", "/forks"),
        ("keys_url", "/keys{/key_id}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("teams_url", "/teams"),
        ("hooks_url", "/hooks"),
        ("issue_events_url", "/issues/events{/number}"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("merges_url", "/merges"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("downloads_url", "/downloads"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("milestones_url", "/milestones{/number}"),
        ("notifications_url", "/notifications{?since,all,participating}"),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
        ("deployments_url", "/deployments"),
    ] {
        repository[field] = Value::String(format!("{api}{path}"));
    }
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "before": before, "after": after, "repository": repository,
        "pusher": {"name": "octocat", "email": "mona@github.com"},
        "organization": {"login": owner, "id": 9_919, "url": format!("https://api.github.com/orgs/{owner}")},
        "sender": github_user("octocat", 583_231), "created": false, "deleted": false, "forced": false,
        "base_ref": null, "compare": format!("https://github.com/{repo}/compare/{before}...{after}", after = after.as_str().unwrap_or_default()),
        "commits": commits, "head_commit": commits[2].clone()
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::verify::{Inbound, Verify};

    /// Each kind is signed as its provider's verifier expects, differs from
    /// webhook to webhook, and has the size its documentation says.
    #[test]
    fn each_webhook_verifies_with_its_provider_and_is_the_size_it_claims() {
        let now = chrono::Utc::now().timestamp();
        for (webhook, sizes) in [(Webhook::Stripe, 1_800..2_600), (Webhook::GithubPush, 8_000..10_500)] {
            let (body, lines) = webhook.signed(7, 1);
            let (other, _) = webhook.signed(8, 1);
            assert_ne!(body, other, "{webhook:?}: every webhook is new");
            assert!(sizes.contains(&body.len()), "{webhook:?}: {} bytes", body.len());
            let mut headers = axum::http::HeaderMap::new();
            for line in lines.split("\r\n").filter(|l| !l.is_empty()) {
                let (name, value) = line.split_once(": ").expect("name: value");
                headers.insert(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    value.parse().expect("value"),
                );
            }
            let inbound = Inbound { headers: &headers, body: &body, public_url: None, now };
            let secrets = [SECRET.to_owned()];
            let verified = match webhook {
                Webhook::Stripe => bridge::verify::stripe::Stripe::new(&secrets, 300).verify(&inbound),
                Webhook::GithubPush => bridge::verify::github::Github::new(&secrets, false).verify(&inbound),
            };
            assert_eq!(verified, Ok(()), "{webhook:?}");
            let mut tampered = body.clone();
            tampered[10] ^= 1;
            let inbound = Inbound { body: &tampered, ..inbound };
            let refused = match webhook {
                Webhook::Stripe => bridge::verify::stripe::Stripe::new(&secrets, 300).verify(&inbound),
                Webhook::GithubPush => bridge::verify::github::Github::new(&secrets, false).verify(&inbound),
            };
            assert!(refused.is_err(), "{webhook:?}: a changed byte is refused");
        }
    }
}
