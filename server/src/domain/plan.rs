//! What one reconcile of an application should do, decided from facts: the assessment of the
//! compare (out of sync? a new revision or drift?) and the plan of steps from the assessment and
//! the application's policy. Pure; `reconcile::reconcile_app` observes the facts and executes
//! the steps.

/// The application's sync policy, as the plan needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `sync_policy = "auto"`: Tidemark syncs a new revision on its own.
    pub auto_sync: bool,
    /// Re-apply drift too (auto-sync applications only).
    pub self_heal: bool,
    /// Approvals a manual application's sync needs (0: none, people sync by hand).
    pub approvals_required: u32,
    /// Only a target signed by a trusted key is synced or put up for approval.
    pub require_signed: bool,
}

/// What the compare found, in the field's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    /// Some resource is not Synced (missing, out of sync, extraneous).
    pub out_of_sync: bool,
    /// The target's rendering differs from the last successful sync (or nothing synced yet).
    pub new_revision: bool,
    /// Out of sync without a new revision: the cluster moved away from the last sync.
    pub drifting: bool,
}

/// Assesses a compare: `out_of_sync` from the diffs, `new_revision` from the last sync's digest.
pub fn assess(out_of_sync: bool, new_revision: bool) -> Assessment {
    Assessment {
        out_of_sync,
        new_revision,
        drifting: out_of_sync && !new_revision,
    }
}

/// Why a sync runs (the `cause` recorded on the sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCause {
    /// A new revision of an auto-sync application.
    Auto,
    /// Drift of an auto-sync application with self-heal.
    SelfHeal,
}

impl SyncCause {
    /// The name stored on the sync record.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncCause::Auto => "auto",
            SyncCause::SelfHeal => "self_heal",
        }
    }
}

/// Why a sync request is opened (the `cause` recorded on the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCause {
    /// A new revision waits for approval.
    Revision,
    /// Undoing drift waits for approval.
    Drift,
}

impl RequestCause {
    /// The name stored on the request.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestCause::Revision => "revision",
            RequestCause::Drift => "drift",
        }
    }
}

/// One step of a reconcile, in the order [`plan`] gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open a drift episode (none is open).
    OpenDriftEpisode,
    /// Close the open drift episode: the cluster is back in line by itself.
    CloseDriftEpisode,
    /// Make sure one sync request for the current target waits for approval.
    RequestApproval(RequestCause),
    /// Close a pending request: nothing to approve any more.
    CloseOpenRequest,
    /// Say (once) that the target is not synced because it is not verified, and close a
    /// pending request; the deployed revision stays.
    HoldUnverified,
    /// Sync now.
    Sync(SyncCause),
}

/// The steps for an assessment, given whether a drift episode is open, whether the application
/// is pinned (a pin asks for no approvals), whether its target revision (the pinned one when
/// pinned) is signed by a trusted key, and its policy. Under `require_signed` an unverified target is never synced nor put up
/// for approval (drift is still recorded).
pub fn plan(
    a: &Assessment,
    drift_open: bool,
    pinned: bool,
    target_verified: bool,
    policy: &Policy,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if a.drifting && !drift_open {
        steps.push(Step::OpenDriftEpisode);
    } else if !a.out_of_sync && drift_open {
        steps.push(Step::CloseDriftEpisode);
    }
    let gated = !policy.auto_sync && policy.approvals_required > 0;
    if policy.require_signed && !target_verified && a.out_of_sync {
        steps.push(Step::HoldUnverified);
        return steps;
    }
    if gated && !pinned {
        steps.push(if a.out_of_sync {
            Step::RequestApproval(if a.drifting {
                RequestCause::Drift
            } else {
                RequestCause::Revision
            })
        } else {
            Step::CloseOpenRequest
        });
    }
    if policy.auto_sync && a.out_of_sync && (a.new_revision || policy.self_heal) {
        steps.push(Step::Sync(if a.drifting {
            SyncCause::SelfHeal
        } else {
            SyncCause::Auto
        }));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: Policy = Policy {
        auto_sync: true,
        self_heal: false,
        approvals_required: 0,
        require_signed: false,
    };
    const GATED: Policy = Policy {
        auto_sync: false,
        self_heal: false,
        approvals_required: 2,
        require_signed: false,
    };

    #[test]
    fn a_new_revision_of_an_auto_sync_application_is_synced_and_is_not_drift() {
        let a = assess(true, true);
        assert!(!a.drifting);
        assert_eq!(
            plan(&a, false, false, true, &AUTO),
            [Step::Sync(SyncCause::Auto)]
        );
    }

    #[test]
    fn drift_opens_one_episode_and_is_healed_only_with_self_heal() {
        let a = assess(true, false);
        assert_eq!(
            plan(&a, false, false, true, &AUTO),
            [Step::OpenDriftEpisode]
        );
        assert_eq!(plan(&a, true, false, true, &AUTO), []);
        let heal = Policy {
            self_heal: true,
            ..AUTO
        };
        assert_eq!(
            plan(&a, true, false, true, &heal),
            [Step::Sync(SyncCause::SelfHeal)]
        );
    }

    #[test]
    fn back_in_sync_closes_the_episode_and_the_pending_request() {
        let a = assess(false, false);
        assert_eq!(
            plan(&a, true, false, true, &GATED),
            [Step::CloseDriftEpisode, Step::CloseOpenRequest]
        );
        assert_eq!(plan(&a, false, false, true, &AUTO), []);
    }

    #[test]
    fn a_gated_application_asks_for_approval_unless_pinned() {
        assert_eq!(
            plan(&assess(true, true), false, false, true, &GATED),
            [Step::RequestApproval(RequestCause::Revision)]
        );
        assert_eq!(
            plan(&assess(true, false), true, false, true, &GATED),
            [Step::RequestApproval(RequestCause::Drift)]
        );
        assert_eq!(plan(&assess(true, true), false, true, true, &GATED), []);
        let manual = Policy {
            approvals_required: 0,
            ..GATED
        };
        assert_eq!(plan(&assess(true, true), false, false, true, &manual), []);
    }

    #[test]
    fn an_unverified_target_is_held_not_synced_nor_requested() {
        let signed = |p: Policy| Policy {
            require_signed: true,
            self_heal: true,
            ..p
        };
        let new = assess(true, true);
        assert_eq!(
            plan(&new, false, false, false, &signed(AUTO)),
            [Step::HoldUnverified]
        );
        assert_eq!(
            plan(&new, false, false, false, &signed(GATED)),
            [Step::HoldUnverified]
        );
        // Drift is still recorded; self-heal would apply the unverified target: held.
        assert_eq!(
            plan(&assess(true, false), false, false, false, &signed(AUTO)),
            [Step::OpenDriftEpisode, Step::HoldUnverified]
        );
        assert_eq!(
            plan(&new, false, false, true, &signed(AUTO)),
            [Step::Sync(SyncCause::Auto)]
        );
        // In sync: nothing to hold. Pinned: the pinned revision is the target, held alike.
        assert_eq!(
            plan(&assess(false, true), false, false, false, &signed(AUTO)),
            []
        );
        assert_eq!(
            plan(&new, false, true, false, &signed(AUTO)),
            [Step::HoldUnverified]
        );
    }
}
