//! The review-queue store: the same suite against SQLite and PostgreSQL.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use triaged::secret::SecretUrl;
use triaged::store::{
    CaseStatus, Clock, IdempotencyKey, NewCase, Recorded, Store, StoreError, StoreOptions,
    Subscription,
};

async fn open(db: &TestDb, lease: Duration, targets: Vec<String>) -> Store {
    open_with(db, lease, targets, Clock::Database).await
}

async fn open_with(db: &TestDb, lease: Duration, targets: Vec<String>, clock: Clock) -> Store {
    Store::connect(
        db.url(),
        StoreOptions {
            lease,
            max_lease_failures: 2,
            max_leases_per_reviewer: 3,
            webhook_targets: targets
                .into_iter()
                .map(|url| Subscription {
                    url: url.into(),
                    events: vec!["case.created".into(), "case.resolved".into()],
                })
                .collect(),
            write_timeout: Duration::from_secs(5),
            fhir: Default::default(),
            clock,
        },
    )
    .await
    .expect("connect store")
}

fn key(subject: &str, model: &str, request_id: &str, body: &str) -> IdempotencyKey {
    IdempotencyKey {
        subject: subject.into(),
        model: model.into(),
        protocol: "v1",
        request_id: request_id.into(),
        body_sha256: body.into(),
    }
}

fn new_case(i: usize, reviewers: u32, priority: f64) -> NewCase {
    NewCase {
        id: format!("case-{i:04}-{}", uuid::Uuid::new_v4().simple()),
        model: "m".into(),
        model_version: "1".into(),
        policy_version: "threshold-test".into(),
        instance_index: 0,
        input: vec![i as f32, 1.5],
        feature_names: vec!["a".into(), "b".into()],
        class_names: vec!["benign".into(), "malignant".into()],
        model_class: 1,
        probabilities: vec![0.3, 0.7],
        uncertainty: serde_json::json!({"disagreement": 0.4}),
        reason: "test".into(),
        reason_code: "at_or_above_threshold".into(),
        audit: false,
        policy_route: None,
        reviewers_needed: reviewers,
        escalate_on_disagreement: false,
        max_labels: 4,
        priority,
        patient: None,
    }
}

async fn put(store: &Store, cases: Vec<NewCase>) {
    assert_eq!(
        store.record(None, cases, "{}".into()).await.unwrap(),
        Recorded::New
    );
}

/// Runs `$body` (an async fn taking a `&TestDb`) against both backends.
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::common::sqlite();
                super::$body(&db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = super::common::postgres().await {
                    super::$body(&db).await;
                }
            }
        }
    };
}

async fn lifecycle(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let case = new_case(1, 2, 0.5);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    let a = store
        .claim("dr-a", "reviewer")
        .await
        .unwrap()
        .expect("a case for dr-a");
    assert_eq!(a.case.id, id);
    assert!(
        store.claim("dr-a", "reviewer").await.unwrap().is_none(),
        "a reviewer never holds a case twice"
    );
    let b = store
        .claim("dr-b", "reviewer")
        .await
        .unwrap()
        .expect("the second reviewer gets it too");
    assert_eq!(b.case.id, id);
    assert!(
        store.claim("dr-c", "reviewer").await.unwrap().is_none(),
        "two reviewers needed, two holding it"
    );
    assert!(matches!(
        store.case_for_reviewer(&id, "dr-c").await,
        Err(StoreError::Forbidden(_))
    ));
    assert_eq!(
        store.case_for_reviewer(&id, "dr-a").await.unwrap().input,
        vec![1.0, 1.5]
    );

    let o = store.label(&id, ("dr-a", "reviewer"), 1).await.unwrap();
    assert_eq!((o.labels, o.status.as_str()), (1, "pending"));
    let o = store.label(&id, ("dr-b", "reviewer"), 0).await.unwrap();
    // 1–1 is no majority: never "the lower class"; a third reviewer is asked.
    assert_eq!(
        (o.status, o.consensus, o.reviewers_needed),
        (CaseStatus::Pending, None, 3)
    );
    store
        .claim("dr-c", "reviewer")
        .await
        .unwrap()
        .expect("the tie-breaker's claim");
    let o = store.label(&id, ("dr-c", "reviewer"), 0).await.unwrap();
    assert_eq!(o.status, CaseStatus::Resolved);
    assert_eq!(o.consensus, Some(0), "two of three");
    assert!((o.disagreement.unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let r = o.resolution.expect("resolution reported");
    assert!(!r.model_correct);
    let case = store.case(&id).await.unwrap();
    assert_eq!((case.status.as_str(), case.labels), ("resolved", 3));

    let data = store.export("m", None).await.unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data.counts(0), [2, 1]);
    assert_eq!(data.features(0).unwrap(), [1.0, 1.5]);
    assert_eq!(data.class_names(), ["benign", "malignant"]);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_status["resolved"], 1);
    assert_eq!(stats.by_status["pending"], 0);
}
both_backends!(full_lifecycle, lifecycle);

async fn image_cases_export_as_an_image_data_set(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let mut case = new_case(3, 1, 0.5);
    case.feature_names = Vec::new();
    case.input = (0..2 * 2 * 3).map(|v| (v * 20) as f32).collect();
    let id = case.id.clone();
    put(&store, vec![case]).await;
    store
        .claim("dr-a", "reviewer")
        .await
        .unwrap()
        .expect("a case");
    store.label(&id, ("dr-a", "reviewer"), 1).await.unwrap();
    let data = store.export("m", Some((2, 2, 3))).await.unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data.counts(0), [0, 1]);
    let mut pixels = Vec::new();
    data.extend_inputs(0, &mut pixels);
    let want: Vec<f32> = (0..12).map(|v| (v * 20) as f32).collect();
    assert_eq!(pixels, want);
    let err = store.export("m", Some((4, 4, 3))).await.unwrap_err();
    assert!(err.to_string().contains("not a 4x4x3 image"), "{err}");
}
both_backends!(image_export, image_cases_export_as_an_image_data_set);

async fn labels_are_idempotent_and_need_a_lease(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let mut case = new_case(2, 1, 0.5);
    case.escalate_on_disagreement = true;
    let id = case.id.clone();
    put(&store, vec![case]).await;
    assert!(
        matches!(
            store.label(&id, ("dr-a", "reviewer"), 1).await,
            Err(StoreError::Forbidden(_))
        ),
        "no claim, no label"
    );
    store.claim("dr-a", "reviewer").await.unwrap().unwrap();
    assert!(matches!(
        store.label(&id, ("dr-a", "reviewer"), 7).await,
        Err(StoreError::Invalid(_))
    ));
    // Disagrees with the model (class 1): one more reviewer is needed.
    let o = store.label(&id, ("dr-a", "reviewer"), 0).await.unwrap();
    assert!(o.escalated);
    assert_eq!((o.reviewers_needed, o.status.as_str()), (2, "pending"));
    let again = store.label(&id, ("dr-a", "reviewer"), 0).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.labels, 1);
    assert!(matches!(
        store.label(&id, ("dr-a", "reviewer"), 1).await,
        Err(StoreError::Conflict(_))
    ));
    store.claim("dr-b", "reviewer").await.unwrap().unwrap();
    let o = store.label(&id, ("dr-b", "reviewer"), 0).await.unwrap();
    assert_eq!(
        (o.status.as_str(), o.consensus, o.disagreement),
        ("resolved", Some(0), Some(0.0))
    );
    assert!(
        matches!(
            store.label(&id, ("dr-c", "reviewer"), 0).await,
            Err(StoreError::Conflict(_))
        ),
        "resolved cases take no labels"
    );
}
both_backends!(idempotent_labels, labels_are_idempotent_and_need_a_lease);

async fn request_ids_never_make_a_second_case(db: &TestDb) {
    let store = Arc::new(open(db, Duration::from_secs(60), vec![]).await);
    let mut tasks = Vec::new();
    for t in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let case = new_case(100 + t, 1, 0.5);
            store
                .record(
                    Some(key("client-a", "m", "req-1", "h1")),
                    vec![case],
                    format!("answer {t}"),
                )
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    let mut existing = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Recorded::New => new += 1,
            Recorded::Existing(a) => {
                existing.insert(a);
            }
        }
    }
    assert_eq!(new, 1, "exactly one request recorded");
    assert_eq!(existing.len(), 1, "every repeat gets the same first answer");
    assert_eq!(store.list_cases(None, None, 100, 0).await.unwrap().len(), 1);
    assert_eq!(
        store
            .find_response(&key("client-a", "m", "req-1", "h1"))
            .await
            .unwrap()
            .unwrap(),
        *existing.iter().next().unwrap()
    );
}
both_backends!(request_id_idempotency, request_ids_never_make_a_second_case);

async fn concurrent_claimers_get_distinct_reviewers(db: &TestDb) {
    let store = Arc::new(open(db, Duration::from_secs(60), vec![]).await);
    let cases: Vec<NewCase> = (0..100)
        .map(|i| new_case(i, 1 + (i % 3) as u32, (i % 7) as f64))
        .collect();
    let needed: BTreeMap<String, u32> = cases
        .iter()
        .map(|c| (c.id.clone(), c.reviewers_needed))
        .collect();
    put(&store, cases).await;
    let mut tasks = Vec::new();
    for r in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let me = format!("reviewer-{r}");
            let mut done = Vec::new();
            // No case for me *now* (others hold the rest) is not the end of the
            // work: stop once nothing is pending.
            for _ in 0..5000 {
                match store.claim(&me, "reviewer").await.unwrap() {
                    Some(claim) => {
                        assert!(
                            !done.contains(&claim.case.id),
                            "{me} got {} twice",
                            claim.case.id
                        );
                        store
                            // Reviewers agree, so each case resolves at its k.
                            .label(&claim.case.id, (&me, "reviewer"), 1)
                            .await
                            .unwrap();
                        done.push(claim.case.id);
                    }
                    None if store.stats().await.unwrap().by_status["pending"] == 0 => break,
                    None => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
            (me, done)
        }));
    }
    let mut reviewers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let (me, done) = t.await.unwrap();
        for id in done {
            assert!(reviewers.entry(id).or_default().insert(me.clone()));
        }
    }
    for (id, k) in &needed {
        assert_eq!(
            reviewers.get(id).map_or(0, |r| r.len()),
            *k as usize,
            "case {id}"
        );
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_status["resolved"], 100);
}
both_backends!(
    ten_concurrent_claimers,
    concurrent_claimers_get_distinct_reviewers
);

async fn expired_leases_are_rescued_then_dead_lettered(db: &TestDb) {
    // A manual clock: leases expire when the test says so, not after a sleep.
    let clock = Clock::manual(1_700_000_000_000);
    let lease = Duration::from_secs(60);
    let store = open_with(db, lease, vec![], clock.clone()).await;
    let case = new_case(3, 1, 0.5);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    store.claim("dr-a", "reviewer").await.unwrap().unwrap();
    assert!(store.claim("dr-b", "reviewer").await.unwrap().is_none());
    clock.advance(lease + Duration::from_millis(1));
    assert!(
        store.renew(&id, "dr-a", "reviewer").await.is_err(),
        "an expired lease cannot be renewed"
    );
    assert_eq!(store.rescue_expired().await.unwrap(), 1);
    let b = store
        .claim("dr-b", "reviewer")
        .await
        .unwrap()
        .expect("rescued case is claimable");
    assert_eq!(b.case.lease_failures, 1);
    let renewed = store.renew(&id, "dr-b", "reviewer").await.unwrap();
    assert!(renewed.expires_at > b.lease.expires_at - 1);
    clock.advance(lease + Duration::from_millis(1));
    assert_eq!(store.rescue_expired().await.unwrap(), 1);
    assert_eq!(
        store.case(&id).await.unwrap().status,
        CaseStatus::DeadLetter,
        "two expiries: dead letter"
    );
    assert!(store.claim("dr-c", "reviewer").await.unwrap().is_none());
    // release
    let c2 = new_case(4, 1, 0.5);
    let id2 = c2.id.clone();
    put(&store, vec![c2]).await;
    store.claim("dr-a", "reviewer").await.unwrap().unwrap();
    store.release(&id2, "dr-a", "reviewer").await.unwrap();
    assert!(store.release(&id2, "dr-a", "reviewer").await.is_err());
    assert_eq!(
        store
            .claim("dr-b", "reviewer")
            .await
            .unwrap()
            .unwrap()
            .case
            .id,
        id2
    );
}
both_backends!(
    lease_expiry_and_rescue,
    expired_leases_are_rescued_then_dead_lettered
);

async fn claims_follow_priority_then_age(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let low = new_case(10, 1, 0.1);
    let high = new_case(11, 1, 0.9);
    put(&store, vec![low.clone()]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    put(&store, vec![high.clone()]).await;
    let later_low = new_case(12, 1, 0.1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    put(&store, vec![later_low.clone()]).await;
    let order: Vec<String> = [
        store.claim("a", "reviewer").await.unwrap(),
        store.claim("b", "reviewer").await.unwrap(),
        store.claim("c", "reviewer").await.unwrap(),
    ]
    .into_iter()
    .map(|c| c.unwrap().case.id)
    .collect();
    assert_eq!(order, vec![high.id, low.id, later_low.id]);
}
both_backends!(priority_order, claims_follow_priority_then_age);

async fn audit_log_is_append_only(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let case = new_case(5, 1, 0.5);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    store.claim("dr-a", "reviewer").await.unwrap().unwrap();
    store.label(&id, ("dr-a", "reviewer"), 1).await.unwrap();
    store
        .audit("admin-1", "admin", "case.read", Some(&id), "")
        .await
        .unwrap();
    let entries = store.audit_entries(Some(&id), 0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("dr-a", "case.claim"),
            ("dr-a", "case.label"),
            ("admin-1", "case.read")
        ]
    );
    let pool = sqlx::AnyPool::connect(&match db {
        TestDb::Sqlite { url, .. } => url.clone(),
        TestDb::Postgres { url, .. } => url.clone(),
    })
    .await
    .unwrap();
    assert!(
        sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(&pool)
            .await
            .is_err(),
        "UPDATE must fail"
    );
    assert!(
        sqlx::query("DELETE FROM audit_log")
            .execute(&pool)
            .await
            .is_err(),
        "DELETE must fail"
    );
    assert_eq!(
        store.audit_entries(Some(&id), 0, 100).await.unwrap().len(),
        3
    );
}
both_backends!(append_only_audit, audit_log_is_append_only);

async fn webhook_events_wait_in_the_outbox_until_delivered(db: &TestDb) {
    let store = open(
        db,
        Duration::from_secs(60),
        vec!["http://hook-a".into(), "http://hook-b".into()],
    )
    .await;
    let case = new_case(6, 1, 0.5);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    let due = store.due_events(10, 10_000).await.unwrap();
    assert_eq!(due.len(), 2, "one event per target");
    assert!(due
        .iter()
        .all(|e| e.event == "case.created" && e.payload.contains(&id)));
    assert!(
        store.due_events(10, 10_000).await.unwrap().is_empty(),
        "claimed events are held"
    );
    store.event_failed(due[0].id, "HTTP 500", 0).await.unwrap();
    store.event_delivered(due[1].id).await.unwrap();
    let retry = store.due_events(10, 10_000).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempts, 1);
    store.event_delivered(retry[0].id).await.unwrap();
    assert_eq!(store.pending_events().await.unwrap(), 0);
}
both_backends!(
    webhook_outbox,
    webhook_events_wait_in_the_outbox_until_delivered
);

async fn finding_2_request_ids_are_scoped_per_caller_and_model(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let a = key("clinic-a", "m", "order-1", "h");
    let rec = |k: IdempotencyKey, answer: &str| {
        let case = new_case(200, 1, 0.5);
        let store = &store;
        let answer = answer.to_string();
        async move { store.record(Some(k), vec![case], answer).await.unwrap() }
    };
    assert_eq!(rec(a.clone(), "answer for clinic-a").await, Recorded::New);
    // Another caller, same request id: its own request, never clinic-a's answer.
    let b = key("clinic-b", "m", "order-1", "h");
    assert_eq!(store.find_response(&b).await.unwrap(), None);
    assert_eq!(rec(b.clone(), "answer for clinic-b").await, Recorded::New);
    // The same caller and id on another model: also a new request.
    let other_model = key("clinic-a", "m2", "order-1", "h");
    assert_eq!(rec(other_model, "answer for m2").await, Recorded::New);
    assert_eq!(
        store.find_response(&a).await.unwrap().as_deref(),
        Some("answer for clinic-a")
    );
    assert_eq!(
        store.find_response(&b).await.unwrap().as_deref(),
        Some("answer for clinic-b")
    );
    assert_eq!(store.list_cases(None, None, 100, 0).await.unwrap().len(), 3);
}
both_backends!(
    finding_2_request_id_scope,
    finding_2_request_ids_are_scoped_per_caller_and_model
);

async fn finding_3_a_replay_with_another_body_is_refused(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let first = key("clinic-a", "m", "order-9", "body-1");
    store
        .record(
            Some(first.clone()),
            vec![new_case(300, 1, 0.5)],
            "first".into(),
        )
        .await
        .unwrap();
    let changed = key("clinic-a", "m", "order-9", "body-2");
    assert!(matches!(
        store.find_response(&changed).await,
        Err(StoreError::Conflict(_))
    ));
    // Also when the replay races into the writer: refused, and no new case.
    assert!(matches!(
        store
            .record(Some(changed), vec![new_case(301, 1, 0.5)], "second".into())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .record(Some(first), vec![new_case(302, 1, 0.5)], "again".into())
            .await
            .unwrap(),
        Recorded::Existing("first".into())
    );
    assert_eq!(store.list_cases(None, None, 100, 0).await.unwrap().len(), 1);
}
both_backends!(
    finding_3_replay_body,
    finding_3_a_replay_with_another_body_is_refused
);

async fn finding_10_audit_log_pages_by_cursor_and_records_the_acting_role(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let case = new_case(400, 1, 0.5);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    store.claim("root", "admin").await.unwrap().unwrap();
    for i in 0..5 {
        store
            .audit(
                "root",
                "admin",
                "case.read",
                Some(&id),
                &format!("read {i}"),
            )
            .await
            .unwrap();
    }
    let first = store.audit_entries(Some(&id), 0, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(
        (first[0].action.as_str(), first[0].role.as_str()),
        ("case.claim", "admin"),
        "an admin's claim is logged as the admin's"
    );
    let next = store
        .audit_entries(Some(&id), first[3].id, 4)
        .await
        .unwrap();
    assert_eq!(next.len(), 2, "the cursor continues where the page ended");
    assert!(next.iter().all(|e| e.id > first[3].id));
}
both_backends!(
    finding_10_audit_cursor,
    finding_10_audit_log_pages_by_cursor_and_records_the_acting_role
);

async fn expired_leases_are_counted_once_by_concurrent_rescuers(db: &TestDb) {
    let clock = Clock::manual(1_700_000_000_000);
    let lease = Duration::from_secs(60);
    let a = Arc::new(open_with(db, lease, vec![], clock.clone()).await);
    let b = Arc::new(open_with(db, lease, vec![], clock.clone()).await);
    let cases: Vec<NewCase> = (0..20).map(|i| new_case(500 + i, 1, 0.5)).collect();
    put(&a, cases).await;
    for i in 0..20 {
        a.claim(&format!("dr-{i}"), "reviewer")
            .await
            .unwrap()
            .unwrap();
    }
    clock.advance(lease + Duration::from_millis(1));
    let (x, y) = tokio::join!(a.rescue_expired(), b.rescue_expired());
    assert_eq!(
        x.unwrap() + y.unwrap(),
        20,
        "each expiry counted exactly once"
    );
    let failures: i64 = a
        .list_cases(None, None, 100, 0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.lease_failures)
        .sum();
    assert_eq!(failures, 20);
}
both_backends!(
    rescue_counts_once,
    expired_leases_are_counted_once_by_concurrent_rescuers
);

async fn events_are_queued_only_for_subscribed_targets(db: &TestDb) {
    let store = Store::connect(
        db.url(),
        StoreOptions {
            webhook_targets: vec![
                Subscription {
                    url: SecretUrl::new("http://created-only"),
                    events: vec!["case.created".into()],
                },
                Subscription {
                    url: SecretUrl::new("http://resolved-only"),
                    events: vec!["case.resolved".into()],
                },
            ],
            ..StoreOptions::with_lease(Duration::from_secs(60))
        },
    )
    .await
    .unwrap();
    put(&store, vec![new_case(600, 1, 0.5)]).await;
    let due = store.due_events(10, 10_000).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].target.expose(), "http://created-only");
}
both_backends!(
    webhook_subscriptions,
    events_are_queued_only_for_subscribed_targets
);

/// Claims the case and labels it as `reviewer`.
async fn claim_and_label(
    store: &Store,
    reviewer: &str,
    label: i64,
) -> triaged::store::LabelOutcome {
    let claim = store
        .claim(reviewer, "reviewer")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{reviewer} found nothing to claim"));
    store
        .label(&claim.case.id, (reviewer, "reviewer"), label)
        .await
        .unwrap()
}

fn five_class_case(i: usize, reviewers: u32) -> NewCase {
    NewCase {
        class_names: (0..5).map(|c| format!("c{c}")).collect(),
        probabilities: vec![0.2; 5],
        ..new_case(i, reviewers, 0.5)
    }
}

async fn ties_ask_for_more_labels_then_adjudication_never_the_lowest_class(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let case = five_class_case(700, 2);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    claim_and_label(&store, "dr-a", 3).await;
    // 1–1: no strict majority, so a third reviewer is asked for.
    let o = claim_and_label(&store, "dr-b", 2).await;
    assert_eq!((o.status, o.reviewers_needed), (CaseStatus::Pending, 3));
    // 1–1–1, then 1–1–1–1 at the cap of 4: adjudication, never class 0..
    let o = claim_and_label(&store, "dr-c", 4).await;
    assert_eq!((o.status, o.reviewers_needed), (CaseStatus::Pending, 4));
    let o = claim_and_label(&store, "dr-d", 1).await;
    assert_eq!(o.status, CaseStatus::Adjudication);
    assert_eq!(o.consensus, None, "a tie is never resolved by vote");
    assert!(
        store.claim("dr-e", "reviewer").await.unwrap().is_none(),
        "not claimable"
    );
    // Only a case in adjudication is adjudicated, with a class of its model.
    assert!(matches!(
        store.adjudicate(&id, ("root", "admin"), 9).await,
        Err(StoreError::Invalid(_))
    ));
    let o = store.adjudicate(&id, ("root", "admin"), 2).await.unwrap();
    assert_eq!((o.status, o.consensus), (CaseStatus::Resolved, Some(2)));
    let case = store.case(&id).await.unwrap();
    assert_eq!(case.adjudicated_by.as_deref(), Some("root"));
    assert_eq!(case.consensus, Some(2));
    assert!(matches!(
        store.adjudicate(&id, ("root", "admin"), 2).await,
        Err(StoreError::Conflict(_))
    ));
    let log = store.audit_entries(Some(&id), 0, 100).await.unwrap();
    assert!(log
        .iter()
        .any(|e| e.action == "case.adjudicate" && e.actor == "root"));
}
both_backends!(
    consensus_ties,
    ties_ask_for_more_labels_then_adjudication_never_the_lowest_class
);

async fn a_strict_majority_resolves(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    put(&store, vec![five_class_case(710, 3)]).await;
    claim_and_label(&store, "dr-a", 4).await;
    claim_and_label(&store, "dr-b", 1).await;
    let o = claim_and_label(&store, "dr-c", 4).await;
    assert_eq!((o.status, o.consensus), (CaseStatus::Resolved, Some(4)));
}
both_backends!(strict_majority, a_strict_majority_resolves);

async fn the_audit_monitor_state_is_shared_and_survives_a_reconnect(db: &TestDb) {
    let a = open(db, Duration::from_secs(60), vec![]).await;
    let bump = |stored: Option<&str>| -> Result<String, String> {
        let n: u64 = stored.map_or(0, |s| s.parse().unwrap());
        Ok((n + 1).to_string())
    };
    assert_eq!(a.update_monitor("m", "p1", None, bump).await.unwrap(), "1");
    let b = open(db, Duration::from_secs(60), vec![]).await;
    assert_eq!(b.update_monitor("m", "p1", None, bump).await.unwrap(), "2");
    assert_eq!(
        a.monitor_state("m", "p1").await.unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(
        a.monitor_state("m", "p2").await.unwrap(),
        None,
        "per policy version"
    );
    // A refused update changes nothing.
    assert!(matches!(
        a.update_monitor("m", "p1", None, |_| Err("no".into()))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        b.monitor_state("m", "p1").await.unwrap().as_deref(),
        Some("2")
    );
    // Concurrent updates from two daemons serialise.
    let (x, y) = tokio::join!(
        a.update_monitor("m", "p1", None, bump),
        b.update_monitor("m", "p1", None, bump)
    );
    let mut got = [x.unwrap(), y.unwrap()];
    got.sort();
    assert_eq!(got, ["3".to_string(), "4".to_string()]);
}
both_backends!(
    audit_monitor_state,
    the_audit_monitor_state_is_shared_and_survives_a_reconnect
);

async fn the_adjudication_migration_keeps_existing_cases_leases_and_labels(db: &TestDb) {
    // A queue as the previous release left it: migrations 0001 and 0002 only.
    let backend = if db.url().starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let old = tempfile::tempdir().unwrap();
    for f in ["0001_review_queue.sql", "0002_scoped_idempotency.sql"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/store/migrations")
                .join(backend)
                .join(f),
            old.path().join(f),
        )
        .unwrap();
    }
    sqlx::any::install_default_drivers();
    let url = if backend == "sqlite" {
        format!("{}?mode=rwc", db.url())
    } else {
        db.url().to_string()
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cases (id, model, model_version, policy_version, instance_index, input, feature_names, \
         class_names, model_class, probabilities, uncertainty, reason, reason_code, audit, reviewers_needed, \
         escalate_on_disagreement, priority, status, created_at) \
         VALUES ('old-1', 'm', '1', 'p', 0, '[1.0]', '[\"a\"]', '[\"x\",\"y\",\"z\"]', 1, '[0.2,0.5,0.3]', '{}', 'r', \
         'c', 0, 2, 0, 0.5, 'pending', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO labels (case_id, reviewer, label, created_at) VALUES ('old-1', 'dr-a', 0, 2)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    // The new release migrates it; nothing is lost, and the new rules apply.
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let case = store.case("old-1").await.unwrap();
    assert_eq!(
        (case.status, case.labels, case.max_labels),
        (CaseStatus::Pending, 1, 5)
    );
    claim_and_label(&store, "dr-b", 2).await; // 1–1: no majority
    claim_and_label(&store, "dr-c", 1).await; // 1–1–1
    claim_and_label(&store, "dr-d", 0).await; // 2–1–1: no strict majority
    let o = claim_and_label(&store, "dr-e", 1).await; // 2–2–1 at the cap of 5
    assert_eq!(o.status, CaseStatus::Adjudication);
    if backend == "sqlite" {
        // The rebuilt children still reference `cases`, and nothing dangles.
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        for child in ["leases", "labels"] {
            let (parent,): (String,) = sqlx::query_as(&format!(
                "SELECT \"table\" FROM pragma_foreign_key_list('{child}')"
            ))
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(parent, "cases", "{child}");
        }
        let dangling: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(dangling.is_empty(), "{dangling:?}");
    }
}
both_backends!(
    adjudication_migration,
    the_adjudication_migration_keeps_existing_cases_leases_and_labels
);

async fn no_resolved_case_ever_has_a_tied_vote(db: &TestDb) {
    use rand::{Rng, SeedableRng};
    let store = open(db, Duration::from_secs(60), vec![]).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    for i in 0..40 {
        let k = rng.gen_range(1..=3);
        let case = five_class_case(800 + i, k);
        let id = case.id.clone();
        put(&store, vec![case]).await;
        let classes = rng.gen_range(2..=5); // how spread the reviewers are
        for r in 0.. {
            let o =
                claim_and_label(&store, &format!("dr-{i}-{r}"), rng.gen_range(0..classes)).await;
            if o.status != CaseStatus::Pending {
                break;
            }
        }
        let case = store.case(&id).await.unwrap();
        let labels = store.audit_entries(Some(&id), 0, 100).await.unwrap();
        let votes: Vec<i64> = labels
            .iter()
            .filter(|e| e.action == "case.label")
            .map(|e| e.detail.trim_start_matches("label ").parse().unwrap())
            .collect();
        match case.status {
            CaseStatus::Resolved => {
                let c = case.consensus.unwrap();
                let n = votes.iter().filter(|&&v| v == c).count();
                assert!(2 * n > votes.len(), "case {i}: {c} won {n} of {votes:?}");
            }
            CaseStatus::Adjudication => {
                assert_eq!(votes.len() as i64, case.max_labels, "case {i}: {votes:?}");
            }
            other => panic!("case {i} ended {other:?}"),
        }
    }
}
both_backends!(no_tied_resolutions, no_resolved_case_ever_has_a_tied_vote);

async fn finding2_5_one_reviewer_can_neither_hoard_nor_dead_letter_the_queue(db: &TestDb) {
    use triaged::store::RequeueOutcome;
    let clock = Clock::manual(1_700_000_000_000);
    let lease = Duration::from_secs(60);
    let store = open_with(db, lease, vec![], clock.clone()).await;
    let cases: Vec<NewCase> = (0..5).map(|i| new_case(900 + i, 1, 0.5)).collect();
    let last = cases[4].id.clone();
    put(&store, cases).await;
    // The cap: three live leases, then 409 saying why.
    for _ in 0..3 {
        store.claim("dr-b", "reviewer").await.unwrap().unwrap();
    }
    match store.claim("dr-b", "reviewer").await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("max_leases_per_reviewer = 3"), "{m}"),
        other => panic!("a fourth claim: {other:?}"),
    }
    // The same reviewer letting leases lapse again and again (max_lease_failures
    // is 2 here) never dead-letters a case; a lapse counts even when it
    // re-claims before the rescue runs.
    for round in 0..4 {
        clock.advance(lease + Duration::from_millis(1));
        if round % 2 == 0 {
            store.rescue_expired().await.unwrap();
        }
        for _ in 0..3 {
            store.claim("dr-b", "reviewer").await.unwrap().unwrap();
        }
    }
    let mine = store.list_cases(None, None, 100, 0).await.unwrap();
    assert!(mine.iter().all(|c| c.status == CaseStatus::Pending));
    let lapses: i64 = mine.iter().map(|c| c.lease_failures).sum();
    assert_eq!(lapses, 12, "every lapse counted, re-claimed ones too");
    // A second reviewer's lapse on one of them: two distinct reviewers.
    clock.advance(lease + Duration::from_millis(1));
    store.rescue_expired().await.unwrap();
    let dr_c = store.claim("dr-c", "reviewer").await.unwrap().unwrap();
    clock.advance(lease + Duration::from_millis(1));
    store.rescue_expired().await.unwrap();
    let dead = store.case(&dr_c.case.id).await.unwrap();
    assert_eq!(dead.status, CaseStatus::DeadLetter);
    // An admin brings it back; the requeue is audited with its reason.
    let done = store
        .requeue(
            &[dr_c.case.id.clone(), last.clone(), "nope".into()],
            None,
            ("root", "admin"),
            "looked at it",
        )
        .await
        .unwrap();
    let outcomes: Vec<_> = done.iter().map(|d| d.outcome.clone()).collect();
    assert_ne!(
        dr_c.case.id, last,
        "dr-c claimed one of dr-b's (older) cases"
    );
    assert_eq!(
        outcomes,
        vec![
            RequeueOutcome::Requeued,
            RequeueOutcome::NotDeadLetter("pending".into()),
            RequeueOutcome::NotFound
        ]
    );
    let back = store.case(&dr_c.case.id).await.unwrap();
    assert_eq!((back.status, back.lease_failures), (CaseStatus::Pending, 0));
    let audit = store
        .audit_entries(Some(&dr_c.case.id), 0, 1000)
        .await
        .unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (
            last.action.as_str(),
            last.actor.as_str(),
            last.detail.as_str()
        ),
        ("case.requeue", "root", "looked at it")
    );
    assert!(store.dead_letter_ids(None, 10).await.unwrap().is_empty());
}
both_backends!(
    finding2_5_lease_cap_and_distinct_lapses,
    finding2_5_one_reviewer_can_neither_hoard_nor_dead_letter_the_queue
);

async fn finding2_9_the_audit_log_cannot_be_replaced(db: &TestDb) {
    let store = open(db, Duration::from_secs(60), vec![]).await;
    store
        .audit("dr-a", "reviewer", "case.read", None, "original")
        .await
        .unwrap();
    let entry = store.audit_entries(None, 0, 10).await.unwrap().remove(0);
    let pool = sqlx::AnyPool::connect(db.url()).await.unwrap();
    let replace = match db {
        TestDb::Sqlite { .. } => {
            "INSERT OR REPLACE INTO audit_log (id, at, actor, role, action, case_id, detail) \
             VALUES ($1, 0, 'mallory', 'admin', 'case.read', NULL, 'forged')"
        }
        TestDb::Postgres { .. } => {
            "INSERT INTO audit_log (id, at, actor, role, action, case_id, detail) \
             VALUES ($1, 0, 'mallory', 'admin', 'case.read', NULL, 'forged') \
             ON CONFLICT (id) DO UPDATE SET actor = excluded.actor"
        }
    };
    assert!(
        sqlx::query(replace)
            .bind(entry.id)
            .execute(&pool)
            .await
            .is_err(),
        "replacing an audit row must fail"
    );
    let again = store.audit_entries(None, 0, 10).await.unwrap().remove(0);
    assert_eq!(
        (again.actor.as_str(), again.detail.as_str()),
        ("dr-a", "original")
    );
}
both_backends!(
    finding2_9_append_only_audit_log,
    finding2_9_the_audit_log_cannot_be_replaced
);
