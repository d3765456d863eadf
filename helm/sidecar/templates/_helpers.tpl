{{/*
Named templates of the resilience sidecar chart.

The public ones (sidecar.container, sidecar.volumes, sidecar.proxyEnv, sidecar.podLabels,
sidecar.podAnnotations) are what another chart includes to put the sidecar into its own
pods. Each takes a dict with this chart's values and the release:

  {{ include "sidecar.container" (dict "Values" .Values.sidecar "Release" .Release) }}

so they read nothing but .Values and .Release (no .Chart, no .Files): the names they
compute match the ConfigMap and Secret that this chart renders as the other chart's
dependency. This chart's own templates call them the same way, with
(dict "Values" .Values "Release" .Release).
*/}}

{{/* The prefix of every object name: <release>-sidecar, or fullnameOverride. */}}
{{- define "sidecar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-sidecar" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding sidecar.yaml. */}}
{{- define "sidecar.configMapName" -}}
{{- include "sidecar.fullname" . -}}
{{- end -}}

{{/* The Secret holding the admin token: adminToken.existingSecret, or the chart's own. */}}
{{- define "sidecar.adminSecretName" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- .Values.adminToken.existingSecret -}}
{{- else -}}
{{- printf "%s-admin" (include "sidecar.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The admin API's port, from config.admin.bind (host:port or [v6]:port). */}}
{{- define "sidecar.adminPort" -}}
{{- .Values.config.admin.bind | toString | splitList ":" | last -}}
{{- end -}}

{{/* http://127.0.0.1:PORT of the first forward listener (one without `upstream`); empty if none. */}}
{{- define "sidecar.proxyURL" -}}
{{- $ports := list -}}
{{- range .Values.config.listeners -}}
{{- if not .upstream -}}
{{- $ports = append $ports (.bind | toString | splitList ":" | last) -}}
{{- end -}}
{{- end -}}
{{- if $ports -}}
{{- printf "http://127.0.0.1:%s" (first $ports) -}}
{{- end -}}
{{- end -}}

{{/* Labels of this chart's own objects (these templates have .Chart). */}}
{{- define "sidecar.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: resilience-sidecar
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The sidecar container, as one list item. With nativeSidecar (the default) it goes under
the pod's `initContainers:`; with nativeSidecar: false, under `containers:`.
*/}}
{{- define "sidecar.container" -}}
- name: sidecar
  image: {{ printf "%s:%s" .Values.image.repository (toString .Values.image.tag) | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  args: ["-c", "/etc/sidecar/sidecar.yaml"]
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: admin
      containerPort: {{ include "sidecar.adminPort" . }}
      protocol: TCP
  {{- with .Values.probes.startup }}
  startupProbe:
    httpGet: {path: /readyz, port: admin}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.probes.liveness }}
  livenessProbe:
    httpGet: {path: /healthz, port: admin}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.probes.readiness }}
  readinessProbe:
    httpGet: {path: /readyz, port: admin}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    {{- /* A directory mount, never subPath: only a directory mount is updated in place
    (the `..data` symlink swap the sidecar watches); a subPath copy never changes. */}}
    - name: resilience-sidecar-config
      mountPath: /etc/sidecar
      readOnly: true
    - name: resilience-sidecar-admin
      mountPath: /var/run/sidecar
      readOnly: true
{{- end -}}

{{/* The two volumes the container mounts, as list items for the pod's `volumes:`. */}}
{{- define "sidecar.volumes" -}}
- name: resilience-sidecar-config
  configMap:
    name: {{ include "sidecar.configMapName" . }}
- name: resilience-sidecar-admin
  secret:
    secretName: {{ include "sidecar.adminSecretName" . }}
    defaultMode: 0444
    items:
      - key: {{ .Values.adminToken.key }}
        path: admin-token
{{- end -}}

{{/* The application container's proxy environment, as list items for its `env:`. */}}
{{- define "sidecar.proxyEnv" -}}
{{- $url := include "sidecar.proxyURL" . -}}
{{- if $url -}}
- name: HTTP_PROXY
  value: {{ $url | quote }}
- name: http_proxy
  value: {{ $url | quote }}
{{- if .Values.proxyEnv.https }}
- name: HTTPS_PROXY
  value: {{ $url | quote }}
- name: https_proxy
  value: {{ $url | quote }}
{{- end }}
- name: NO_PROXY
  value: {{ .Values.proxyEnv.noProxy | quote }}
- name: no_proxy
  value: {{ .Values.proxyEnv.noProxy | quote }}
{{- end -}}
{{- end -}}

{{/* The pod label the PodMonitor selects on, as map entries for the pod's `labels:`. */}}
{{- define "sidecar.podLabels" -}}
resilience-sidecar: enabled
{{- end -}}

{{/* Prometheus scrape annotations, as map entries for the pod's `annotations:` (may be empty). */}}
{{- define "sidecar.podAnnotations" -}}
{{- if and .Values.prometheusAnnotations (not .Values.podMonitor.enabled) -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "sidecar.adminPort" . | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}
