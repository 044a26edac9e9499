{{/* Chart name, at most 63 characters. */}}
{{- define "pyexec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of resource names: the release name, with the chart name unless it is in it. */}}
{{- define "pyexec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every resource. Call with (dict "context" $ "component" "api"). */}}
{{- define "pyexec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pyexec.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: pyexec
{{- end }}

{{/* Labels that select a component's pods. Call with (dict "context" $ "component" "api"). */}}
{{- define "pyexec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pyexec.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The namespace of PythonExecutions and sandbox pods. */}}
{{- define "pyexec.sandboxNamespace" -}}
{{- required "sandbox.namespace.name is required" .Values.sandbox.namespace.name }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest wins over the tag. */}}
{{- define "pyexec.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" (required "an image repository is required" .repository) .digest }}
{{- else }}
{{- printf "%s:%s" (required "an image repository is required" .repository) (required "an image tag or digest is required" (toString .tag)) }}
{{- end }}
{{- end }}

{{/* Environment shared by the API and the controller: logging and the execution limits. */}}
{{- define "pyexec.commonEnv" -}}
- name: PYEXEC_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: PYEXEC_LOG
  value: {{ .Values.logLevel | quote }}
- name: PYEXEC_TIMEOUT_SECONDS
  value: {{ include "pyexec.number" .Values.sandbox.limits.timeoutSeconds | quote }}
- name: PYEXEC_MAX_TIMEOUT_SECONDS
  value: {{ include "pyexec.number" .Values.sandbox.limits.maxTimeoutSeconds | quote }}
- name: PYEXEC_MEMORY_MB
  value: {{ include "pyexec.number" .Values.sandbox.limits.memoryMb | quote }}
- name: PYEXEC_MAX_MEMORY_MB
  value: {{ include "pyexec.number" .Values.sandbox.limits.maxMemoryMb | quote }}
{{- end }}

{{/* Settings the chart cannot work with, refused before anything is applied. */}}
{{- define "pyexec.validate" -}}
{{- $sandboxNamespace := include "pyexec.sandboxNamespace" . }}
{{- if and .Values.sandbox.namespace.create (eq $sandboxNamespace .Release.Namespace) }}
{{- fail "sandbox.namespace.create is true but sandbox.namespace.name is the release namespace: pick another name, or set create=false" }}
{{- end }}
{{- if and .Values.sandbox.networkPolicy.enabled (eq $sandboxNamespace .Release.Namespace) (empty .Values.sandbox.networkPolicy.podSelector) }}
{{- fail "the sandbox namespace is the release namespace: an empty sandbox.networkPolicy.podSelector would cut the API and the controller off too; set a selector of sandbox pods" }}
{{- end }}
{{- if not (has .Values.sandbox.security (list "nsjail" "privileged" "restricted")) }}
{{- fail (printf "sandbox.security must be nsjail, privileged or restricted, not %q" .Values.sandbox.security) }}
{{- end }}
{{- if and (not .Values.sandbox.withoutGvisor) (empty .Values.sandbox.runtimeClassName) }}
{{- fail "sandbox.runtimeClassName is empty: sandbox pods would run without gVisor; name gVisor's RuntimeClass, or set sandbox.withoutGvisor=true to run them on the node's kernel knowingly" }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" .Values.logFormat) }}
{{- end }}
{{- end }}

{{/* A number as an environment value: whole numbers without an exponent (values files give
floats, which print 1048576 as 1.048576e+06). */}}
{{- define "pyexec.number" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}
