{{/* The chart's name, overridable. */}}
{{- define "agentflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the base of every object name (63 characters at most). */}}
{{- define "agentflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agentflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "agentflow.labels" -}}
helm.sh/chart: {{ include "agentflow.chart" . }}
{{ include "agentflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentflow
{{- end }}

{{/* Labels that select the operator pod (immutable in the Deployment's selector). */}}
{{- define "agentflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agentflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agentflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Checks of combinations the schema cannot express; included by the Deployment so that any
render fails early with a clear message.
*/}}
{{- define "agentflow.validate" -}}
{{- if and (eq .Values.watch.mode "namespaced") (empty .Values.watch.namespaces) }}
{{- fail "watch.mode is namespaced: list the namespaces to watch in watch.namespaces" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespaced") (ne .Values.watch.mode "namespaced") }}
{{- fail "rbac.scope namespaced grants access to the watched namespaces only: set watch.mode namespaced too" }}
{{- end }}
{{- end }}

{{/* Namespaces the operator's RBAC and the step ServiceAccount cover in namespaced mode. */}}
{{- define "agentflow.watchedNamespaces" -}}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- end }}

{{/* The step ServiceAccount's name when the operator should assign it to step pods, else "". */}}
{{- define "agentflow.stepServiceAccountName" -}}
{{- if eq .Values.watch.mode "namespaced" }}
{{- .Values.stepServiceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's Lease: in the release namespace in every watch mode, never in a watched namespace
(whoever may write Leases there could take or hold the leadership).  The operator watches it
itself, for its heartbeat, so kopf need not watch that namespace.
*/}}
{{- define "agentflow.leaseNamespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/* The Lease's name: one per release, so two releases in a namespace never share it. */}}
{{- define "agentflow.leaseName" -}}
{{- include "agentflow.fullname" . }}-operator
{{- end }}
