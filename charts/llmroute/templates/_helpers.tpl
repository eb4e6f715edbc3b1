{{/* The release's base name, at most 63 characters (the limit of a label value and a DNS label). */}}
{{- define "llmroute.fullname" -}}
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

{{/* Names of the parts, each short enough for a Service (which needs a DNS label). */}}
{{- define "llmroute.operatorName" -}}{{ include "llmroute.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "llmroute.hubName" -}}{{ include "llmroute.fullname" . | trunc 59 | trimSuffix "-" }}-hub{{- end -}}
{{- define "llmroute.webhookName" -}}{{ include "llmroute.fullname" . | trunc 55 | trimSuffix "-" }}-webhook{{- end -}}
{{- define "llmroute.tlsSecretName" -}}{{ include "llmroute.fullname" . | trunc 59 | trimSuffix "-" }}-tls{{- end -}}
{{- define "llmroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmroute.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes environment variable that holds a Service's cluster IP (service links). */}}
{{- define "llmroute.serviceHostEnv" -}}{{ . | upper | replace "-" "_" }}_SERVICE_HOST{{- end -}}

{{- define "llmroute.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "llmroute.operatorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* One image, two entry points: llmroute-operator and llmroute-proxy. */}}
{{- define "llmroute.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* injection.image's repository or tag, either alone, chooses the sidecar's image; else the operator's. */}}
{{- define "llmroute.sidecarImage" -}}
{{- $i := .Values.injection.image -}}
{{- if or $i.repository $i.tag -}}
{{- printf "%s:%s" (default .Values.image.repository $i.repository) (default .Chart.AppVersion $i.tag) -}}
{{- else -}}
{{- include "llmroute.image" . -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the webhook never injects: kube-system, the release's own, and the listed ones. */}}
{{- define "llmroute.excludedNamespaces" -}}
{{- $names := list "kube-system" .Release.Namespace -}}
{{- range .Values.webhook.excludeNamespaces -}}{{- $names = append $names . -}}{{- end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/*
The generated TLS material (CA + serving certificate for the hub and webhook Services), made once per
render and cached so that the Secret and the webhook's caBundle agree; reused from the existing Secret
on upgrade (`lookup`), so `helm upgrade` neither rotates it nor breaks running sidecars, which trust
this CA.
*/}}
{{- define "llmroute.tls" -}}
{{- if not (hasKey .Values "__tls") -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "llmroute.tlsSecretName" .) -}}
{{- $data := dict -}}
{{- if and $secret (hasKey $secret "data") -}}{{- $data = $secret.data -}}{{- end -}}
{{- if and (hasKey $data "ca.crt") (hasKey $data "tls.crt") (hasKey $data "tls.key") -}}
{{- $_ := set .Values "__tls" (dict "ca" (index $data "ca.crt" | b64dec) "cert" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec)) -}}
{{- else -}}
{{- $ns := .Release.Namespace -}}
{{- $hub := include "llmroute.hubName" . -}}
{{- $webhook := include "llmroute.webhookName" . -}}
{{- $names := list (printf "%s.%s.svc" $hub $ns) (printf "%s.%s.svc.cluster.local" $hub $ns) (printf "%s.%s.svc" $webhook $ns) (printf "%s.%s.svc.cluster.local" $webhook $ns) -}}
{{- $ca := genCA (printf "%s-ca" (include "llmroute.fullname" .)) (int .Values.webhook.certValidityDays) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $hub $ns) nil $names (int .Values.webhook.certValidityDays) $ca -}}
{{- $_ := set .Values "__tls" (dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- end -}}
{{- toJson (get .Values "__tls") -}}
{{- end -}}

{{/*
Removes every x-kubernetes-validations (CEL rules) from a CRD, in place, on API servers before 1.23: their
schema has no such field, so Helm's client-side validation refuses the CRD ("unknown field"), and those
servers would not evaluate the rules anyway. The same cross-field rules are in the spec parser, which the
operator runs on every resource (Accepted=False with the field path).
*/}}
{{- define "llmroute.dropCEL" -}}
{{- if kindIs "map" . -}}
{{- $_ := unset . "x-kubernetes-validations" -}}
{{- range $key, $value := . }}{{ include "llmroute.dropCEL" $value }}{{ end -}}
{{- else if kindIs "slice" . -}}
{{- range . }}{{ include "llmroute.dropCEL" . }}{{ end -}}
{{- end -}}
{{- end -}}
