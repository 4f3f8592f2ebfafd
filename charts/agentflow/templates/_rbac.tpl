{{/*
The operator's API rights, shared by the ClusterRole (rbac.scope cluster) and the per-namespace
Roles (rbac.scope namespaced).  Least privilege: no Secrets (agents get them through
secretKeyRef, which the kubelet resolves, not the operator), no pods/exec, no update of specs.
Each rule names the code path that needs it.
*/}}
{{- define "agentflow.operatorRules" -}}
# kopf watches Workflows and takes off the finalizer earlier versions put on them;
# kube.Kube.get_workflow re-reads one after a conflict; kube.Kube.delete_workflow
# enforces spec.ttlSecondsAfterFinished.
- apiGroups: ["agentflow.dev"]
  resources: ["workflows"]
  verbs: ["get", "list", "watch", "patch", "delete"]
# kube.Kube.patch_workflow_status writes phase, steps and conditions.
- apiGroups: ["agentflow.dev"]
  resources: ["workflows/status"]
  verbs: ["patch"]
# kopf watches AgentFallbackPolicies (the fallback_policies index) to resolve fallbacks.
- apiGroups: ["agentflow.dev"]
  resources: ["agentfallbackpolicies"]
  verbs: ["list", "watch"]
# kube.Kube.patch_policy_status reports whether a policy is valid.
- apiGroups: ["agentflow.dev"]
  resources: ["agentfallbackpolicies/status"]
  verbs: ["patch"]
# The Job watch feeds observe.py; kube.Kube.create_job starts a step attempt (get: the
# idempotency check after a 409); kube.Kube.delete_job stops timed-out and cancelled steps.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The Pod watch gives termination messages; kube.Kube.read_job_log lists a Job's pod.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# kube.Kube.read_job_log reads a full report that did not fit the termination message.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Step outputs and cache entries: kube.Kube.create_configmap, replace_configmap_data,
# list_configmaps (cache lookups and the expiry sweep) and delete_configmap.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Workspaces: kube.Kube.create_claim makes a Workflow's claim from spec.workspace.volumeClaimTemplate
# (get: the ownership check after a 409, and kube.Kube.get_claim checks that a claimName exists).
# No delete: the garbage collector deletes a claim with its Workflow.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create"]
# Step and workflow events: RecordEvent actions, posted by events.EventSender through
# kube.Kube.create_event (core/v1 create only).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
