{{/* vim: set filetype=mustache: */}}

{{/*
The services, by how they run. Statefulness is a property of the code, not a choice: a service
whose batch pipelines keep changelog-backed RocksDB state (services/<name>/app.py, no
`positions=`) needs its volume and a stable consumer-group instance id back after a restart;
settlement stores its Kafka positions in PostgreSQL with the ledger and keeps nothing locally.
The VTN projects into PostgreSQL too, but its pipelines are not given `positions=`: they keep
changelog-backed stores, so it is a StatefulSet until its code says otherwise.
*/}}
{{- define "gridflex.statefulServices" -}}
{{- list "telemetry" "enrollment" "dispatch" "baseline" "vtn" | toJson -}}
{{- end -}}

{{- define "gridflex.statelessServices" -}}
{{- list "settlement" | toJson -}}
{{- end -}}

{{/* Where the services keep their state (GRIDFLEX_DATA_DIR), the image's state directory. */}}
{{- define "gridflex.dataDir" -}}
/var/lib/gridflex
{{- end -}}

{{/* Expand the name of the chart. */}}
{{- define "gridflex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
A default fully qualified app name, truncated at 63 characters (DNS names); the release name
alone when it already contains the chart's name.
*/}}
{{- define "gridflex.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
One service's object names: <fullname>-<service>. Truncated at 52 characters, the most a
StatefulSet's name may have (its pods' controller-revision-hash label adds 11).
Usage: {{ include "gridflex.componentName" (dict "name" "telemetry" "context" $) }}
*/}}
{{- define "gridflex.componentName" -}}
{{- printf "%s-%s" (include "gridflex.fullname" .context | trunc 40 | trimSuffix "-") .name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* Chart name and version, as used by the chart label. */}}
{{- define "gridflex.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "gridflex.labels" -}}
helm.sh/chart: {{ include "gridflex.chart" . }}
{{ include "gridflex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gridflex
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the release. */}}
{{- define "gridflex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridflex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels and selector labels of one service's objects.
Usage: {{ include "gridflex.componentLabels" (dict "name" "telemetry" "context" $) }}
*/}}
{{- define "gridflex.componentLabels" -}}
{{ include "gridflex.labels" .context }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "gridflex.componentSelectorLabels" -}}
{{ include "gridflex.selectorLabels" .context }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The image reference: registry/repository, then @digest, else :tag (default: appVersion). */}}
{{- define "gridflex.image" -}}
{{- $registry := default .Values.image.registry .Values.global.imageRegistry -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion (toString .Values.image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets of the pods: the global ones and the image's. */}}
{{- define "gridflex.imagePullSecrets" -}}
{{- $secrets := concat .Values.global.imagePullSecrets .Values.image.pullSecrets | uniq -}}
{{- if $secrets -}}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "gridflex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gridflex.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding GRIDFLEX_DATABASE_URL. */}}
{{- define "gridflex.databaseSecretName" -}}
{{- default (include "gridflex.fullname" .) .Values.externalDatabase.existingSecret -}}
{{- end -}}

{{- define "gridflex.databaseSecretKey" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecretUrlKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{/* The database URL built from externalDatabase.* (the user and password URL-encoded). */}}
{{- define "gridflex.databaseUrl" -}}
{{- $db := .Values.externalDatabase -}}
{{- $credentials := urlquery $db.user -}}
{{- if $db.password -}}
{{- $credentials = printf "%s:%s" $credentials (urlquery $db.password) -}}
{{- end -}}
{{- printf "postgresql://%s@%s:%v/%s" $credentials $db.host $db.port $db.database -}}
{{- end -}}

{{/*
The settings every service shares, by environment variable (gridflex/settings.py), as YAML:
the ConfigMap's data and the setup Job's environment. All values are strings.
*/}}
{{- define "gridflex.sharedSettings" -}}
GRIDFLEX_KAFKA_BOOTSTRAP: {{ .Values.externalKafka.bootstrapServers | quote }}
GRIDFLEX_CLOCK: {{ .Values.config.clock | quote }}
GRIDFLEX_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
GRIDFLEX_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
GRIDFLEX_REPLICATION_FACTOR: {{ .Values.config.replicationFactor | toString | quote }}
{{- /* The image sets these two as well; the chart's probes and volumes depend on them. */}}
GRIDFLEX_WEB_HOST: "0.0.0.0"
GRIDFLEX_DATA_DIR: {{ include "gridflex.dataDir" . | quote }}
{{- range $name, $value := .Values.config.extraSettings }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The environment variable of a service's web port: GRIDFLEX_<SERVICE>_WEB_PORT. */}}
{{- define "gridflex.webPortVariable" -}}
{{- printf "GRIDFLEX_%s_WEB_PORT" (upper .) -}}
{{- end -}}

{{/*
The VTN's base URL as clients reach it (GRIDFLEX_VTN_PUBLIC_URL): what `/auth/server` gives as
the token endpoint's base. `vtn.publicUrl` when set; else, with `vtn.ingress`, the Ingress's host
and path (https with `tls`); else empty (each request's own Host, right only without a proxy).
*/}}
{{- define "gridflex.vtnPublicUrl" -}}
{{- $vtn := .Values.vtn -}}
{{- if $vtn.publicUrl -}}
{{- $vtn.publicUrl | trimSuffix "/" -}}
{{- else if $vtn.ingress.enabled -}}
{{- printf "%s://%s%s" (ternary "https" "http" $vtn.ingress.tls) $vtn.ingress.hostname ($vtn.ingress.path | trimSuffix "/") -}}
{{- end -}}
{{- end -}}

{{/* The database URL as a container environment variable. */}}
{{- define "gridflex.databaseUrlEnv" -}}
- name: GRIDFLEX_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey }}
{{- end -}}

{{/* A security context from values, without the chart's `enabled` switch. */}}
{{- define "gridflex.securityContext" -}}
{{- omit . "enabled" | toYaml -}}
{{- end -}}

{{/*
The pod template of one service (StatefulSet or Deployment).
Usage: {{ include "gridflex.podTemplate" (dict "name" "telemetry" "stateful" true "context" $) }}
*/}}
{{- define "gridflex.podTemplate" -}}
{{- $ := .context -}}
{{- $name := .name -}}
{{- $svc := index $.Values $name -}}
{{- $port := $svc.containerPorts.http -}}
metadata:
  labels:
    {{- include "gridflex.componentLabels" (dict "name" $name "context" $) | nindent 4 }}
    {{- with $svc.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- /* Roll the pods when their configuration changes. */}}
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
    {{- if not $.Values.externalDatabase.existingSecret }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") $ | sha256sum }}
    {{- end }}
    {{- with $svc.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "gridflex.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $.Values.serviceAccount.automountServiceAccountToken }}
  {{- with include "gridflex.imagePullSecrets" $ }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- if $.Values.affinity }}
  affinity:
    {{- toYaml $.Values.affinity | nindent 4 }}
  {{- else if eq $.Values.podAntiAffinityPreset "soft" }}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 1
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "gridflex.componentSelectorLabels" (dict "name" $name "context" $) | nindent 16 }}
  {{- else if eq $.Values.podAntiAffinityPreset "hard" }}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "gridflex.componentSelectorLabels" (dict "name" $name "context" $) | nindent 14 }}
  {{- end }}
  {{- with $.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- if $.Values.podSecurityContext.enabled }}
  securityContext:
    {{- include "gridflex.securityContext" $.Values.podSecurityContext | nindent 4 }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $.Values.terminationGracePeriodSeconds }}
  containers:
    - name: {{ $name }}
      image: {{ include "gridflex.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args: ["run", {{ $name | quote }}]
      {{- if $.Values.containerSecurityContext.enabled }}
      securityContext:
        {{- include "gridflex.securityContext" $.Values.containerSecurityContext | nindent 8 }}
      {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "gridflex.fullname" $ }}
      env:
        {{- include "gridflex.databaseUrlEnv" (dict "secretName" (include "gridflex.databaseSecretName" $) "secretKey" (include "gridflex.databaseSecretKey" $)) | nindent 8 }}
        - name: {{ include "gridflex.webPortVariable" $name }}
          value: {{ $port | toString | quote }}
        {{- if eq $name "vtn" }}
        - name: GRIDFLEX_VTN_PUBLIC_URL
          value: {{ include "gridflex.vtnPublicUrl" $ | quote }}
        {{- end }}
        {{- if .stateful }}
        {{- /* Static membership: a restarted pod gets its partitions back without a rebalance. */}}
        - name: GRIDFLEX_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- range $variable, $value := $svc.settings }}
        - name: {{ $variable }}
          value: {{ $value | toString | quote }}
        {{- end }}
        {{- with $.Values.extraEnvVars }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ $port }}
          protocol: TCP
      {{- with $.Values.startupProbe }}
      {{- if .enabled }}
      startupProbe:
        httpGet:
          path: /health
          port: http
        {{- omit . "enabled" | toYaml | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- with $.Values.livenessProbe }}
      {{- if .enabled }}
      livenessProbe:
        httpGet:
          path: /metrics
          port: http
        {{- omit . "enabled" | toYaml | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- with $.Values.readinessProbe }}
      {{- if .enabled }}
      readinessProbe:
        httpGet:
          path: /health
          port: http
        {{- omit . "enabled" | toYaml | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- with $svc.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: data
          mountPath: {{ include "gridflex.dataDir" $ }}
        - name: tmp
          mountPath: /tmp
        {{- with $.Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- /* The root filesystem is read-only: /tmp is the one other place a process may write. */}}
    - name: tmp
      emptyDir: {}
    {{- if not (and .stateful $svc.persistence.enabled) }}
    {{- /* Without a claim (settlement, or persistence off) the state directory is scratch space. */}}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- with $.Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* A PodDisruptionBudget's limit: minAvailable when set, else maxUnavailable. */}}
{{- define "gridflex.pdbSpec" -}}
{{- if ne (toString (.minAvailable | default "")) "" -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ .maxUnavailable }}
{{- end -}}
{{- end -}}

{{/*
One step of the setup Job: a `gridflex <args>` container (everything but its name).
*/}}
{{- define "gridflex.setupContainer" -}}
{{- $ := .context -}}
image: {{ include "gridflex.image" $ }}
imagePullPolicy: {{ $.Values.image.pullPolicy }}
args:
  {{- toYaml .args | nindent 2 }}
{{- if $.Values.containerSecurityContext.enabled }}
securityContext:
  {{- include "gridflex.securityContext" $.Values.containerSecurityContext | nindent 2 }}
{{- end }}
env:
  {{- toYaml .env | nindent 2 }}
  {{- include "gridflex.databaseUrlEnv" (dict "secretName" .secretName "secretKey" .secretKey) | nindent 2 }}
{{- with $.Values.setup.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}
