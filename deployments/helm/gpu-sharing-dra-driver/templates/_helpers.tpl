{{/* Names and labels shared by every template. */}}

{{- define "gsdd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gsdd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "gsdd.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gsdd.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gsdd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gsdd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gsdd.labels" -}}
{{ include "gsdd.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: kubelet-plugin
{{- end -}}

{{- define "gsdd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gsdd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gsdd.deviceClassName" -}}
{{- default .Values.driverName .Values.deviceClass.name -}}
{{- end -}}

{{- define "gsdd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "gsdd.stateDir" -}}
{{- default (printf "/var/lib/%s" .Values.driverName) .Values.hostPaths.state -}}
{{- end -}}

{{- define "gsdd.pluginDir" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.hostPaths.plugins) .Values.driverName -}}
{{- end -}}

{{/* Chart-level checks that a JSON schema cannot express. */}}
{{- define "gsdd.validate" -}}
{{- if and (not .Values.sharing) (or .Values.memoryPolicy.min .Values.memoryPolicy.step) -}}
{{- fail "memoryPolicy.min/memoryPolicy.step need sharing=true: a requestPolicy is only allowed on a device with allowMultipleAllocations; remove them or set sharing=true" -}}
{{- end -}}
{{- if and (eq .Values.memoryPolicy.type "none") (or .Values.memoryPolicy.min .Values.memoryPolicy.step) -}}
{{- fail "memoryPolicy.min/memoryPolicy.step have no effect with memoryPolicy.type=none; remove them or set memoryPolicy.type=range" -}}
{{- end -}}
{{- end -}}
