{{/*
Names the operator gives what it writes, as JSON: the labels of agentflow.engine.types, the
Workflow API version of agentflow.api.models and the cache entry name prefix of
controller.cache_configmap_name.  The chart cannot import them; tests/chart/test_admission_policy.py
fails if these copies drift from the code.
*/}}
{{- define "agentflow.operatorNames" -}}
{{- toJson (dict
  "workflow" "agentflow.dev/workflow"
  "step" "agentflow.dev/step"
  "run" "agentflow.dev/run"
  "iteration" "agentflow.dev/iteration"
  "attempt" "agentflow.dev/attempt"
  "agent" "agentflow.dev/agent"
  "cache" "agentflow.dev/cache"
  "output" "agentflow.dev/output"
  "workflowApiVersion" "agentflow.dev/v1alpha1"
  "cachePrefix" "agentflow-cache-"
  "outputSuffix" "-output"
  "workspace" "agentflow.dev/workspace"
  "workspaceVolume" "workspace"
  "workspacePath" "/workspace"
  "workspaceInfix" "-workspace-"
  "workspacePrefixLength" 36) }}
{{- end }}

{{/*
A CEL expression: whether ConfigMap `.cm` (the CEL variable object or oldObject) is one the
operator writes (`.names`: agentflow.operatorNames), reading the policy variables
<cm>Labels and <cm>Owners.  Either a cache entry (controller.cache_configmap: cache label
"true", a step label, name <cachePrefix><40 hex digits>) or a step's full report
(controller.output_configmap: output, workflow and step labels, name <job><outputSuffix>, one
controller ownerReference to the Workflow both labels name).
*/}}
{{- define "agentflow.operatorConfigMap" -}}
{{- $n := .names -}}
{{- $labels := printf "variables.%sLabels" .cm -}}
{{- $owners := printf "variables.%sOwners" .cm -}}
(({{ $labels }}[?'{{ $n.cache }}'].orValue('') == 'true'
  && '{{ $n.step }}' in {{ $labels }}
  && {{ .cm }}.metadata.name.matches('^{{ $n.cachePrefix }}[0-9a-f]{40}$'))
 || ('{{ $n.step }}' in {{ $labels }}
  && {{ $labels }}[?'{{ $n.output }}'].orValue('') != ''
  && {{ $labels }}[?'{{ $n.output }}'].orValue('') == {{ $labels }}[?'{{ $n.workflow }}'].orValue('')
  && {{ .cm }}.metadata.name.endsWith('{{ $n.outputSuffix }}')
  && {{ $owners }}.size() == 1
  && {{ $owners }}[0].apiVersion == '{{ $n.workflowApiVersion }}'
  && {{ $owners }}[0].kind == 'Workflow'
  && {{ $owners }}[0].?controller.orValue(false)
  && {{ $owners }}[0].name == {{ $labels }}['{{ $n.output }}']))
{{- end }}

{{/*
A CEL expression: whether `.name` (a CEL string) is the name the operator gives the workspace
claim of the Workflow `.workflow` (a CEL string): engine.names.workspace_claim_name,
<the Workflow's name cut to workspacePrefixLength><workspaceInfix><16 hex digits>.  The digest
(of the Workflow's uid) cannot be checked here.
*/}}
{{- define "agentflow.workspaceClaimName" -}}
{{- $n := .names -}}
{{- $prefix := printf "(%s.size() > %d ? %s.substring(0, %d) : %s)" .workflow (int $n.workspacePrefixLength) .workflow (int $n.workspacePrefixLength) .workflow -}}
({{ .name }}.startsWith({{ $prefix }} + '{{ $n.workspaceInfix }}')
  && {{ .name }}.size() == {{ $prefix }}.size() + {{ add (len $n.workspaceInfix) 16 }}
  && {{ .name }}.matches('{{ $n.workspaceInfix }}[0-9a-f]{16}$'))
{{- end }}
