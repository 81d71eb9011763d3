//! Before anything runs: a dry run (`POST /activities?dryRun=true`) of a draft descriptor whose
//! `deploy-app` task sends a parameter its pipeline does not declare. Azure DevOps (simulated)
//! refuses the preview, so the mistake shows before any run; the corrected descriptor's dry run
//! is clean, and the real runs follow.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::scenario::{self, PRODUCT, VERSION};
use super::{Demo, DEVOPS, OUTPUT};

/// The parameter the draft adds, declared by no pipeline.
const UNDECLARED: &str = "replicas";

impl Demo<'_> {
    /// Stores the draft at `path`, dry-runs its dev stage, and tells what the plan says.
    pub(super) async fn dry_run_catches_the_draft_s_mistake(
        &mut self,
        path: &str,
    ) -> anyhow::Result<()> {
        let mut draft = scenario::descriptor();
        draft["internalComponents"]["lifecycleInfo"]["dev"][1]["configurations"]["params"]
            [UNDECLARED] = json!(3);
        let (status, _) = self.call("PUT", path, Some(draft)).await?;
        if status != 201 && status != 200 {
            bail!("storing the draft descriptor answered HTTP {status}");
        }
        let plan = self.dry_run("dev").await?;
        let problems: Vec<String> = plan["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| {
                let name = t["name"].as_str().unwrap_or("?").to_owned();
                t["problems"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |p| format!("{name}: {}", p["message"].as_str().unwrap_or_default()))
            })
            .collect();
        let caught = format!("Unexpected parameter '{UNDECLARED}'");
        if plan["valid"] != false || !problems.iter().any(|p| p.contains(&caught)) {
            bail!("the dry run of the draft did not catch `{UNDECLARED}`: {plan}");
        }
        let runs = self.sim.stats().runs_created;
        self.report
            .dry_run("dev, draft descriptor", false, &problems, runs)
            .context(OUTPUT)
    }

    /// The dry run of the corrected descriptor (already stored): every task passes.
    pub(super) async fn dry_run_passes(&mut self) -> anyhow::Result<()> {
        let plan = self.dry_run("dev").await?;
        if plan["valid"] != true {
            bail!("the dry run of the corrected descriptor found problems: {plan}");
        }
        let runs = self.sim.stats().runs_created;
        self.report
            .dry_run("dev, corrected descriptor", true, &[], runs)
            .context(OUTPUT)
    }

    async fn dry_run(&self, stage: &str) -> anyhow::Result<Value> {
        let body = json!({"dataProductId": PRODUCT, "dataProductVersion": VERSION, "stage": stage});
        let path = format!("{DEVOPS}/activities?dryRun=true");
        let (status, plan) = self.call("POST", &path, Some(body)).await?;
        if status != 200 {
            bail!("the dry run of {stage} answered HTTP {status}: {plan}");
        }
        Ok(plan)
    }
}
