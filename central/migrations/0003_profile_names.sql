-- Report keys a Bulk Data profile renamed (Parameter.{i}.Name) mapped back to
-- their references, written by the provisioner from its configuration. The
-- store worker uses them to fill the typed tables from renamed keys
-- (`SSID_NBW.3` -> `Device.WiFi.NeighboringWiFiDiagnostic.Result.3.SSID`);
-- `samples` keeps keys as reported.
CREATE TABLE IF NOT EXISTS profile_parameter_names (
    name       text PRIMARY KEY,
    reference  text NOT NULL,
    profile    text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
