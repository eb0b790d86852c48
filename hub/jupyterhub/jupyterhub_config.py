# Example jupyterhub_config.py for a JupyterHub with KubeSpawner that is NOT
# deployed with zero-to-jupyterhub: the spawn form lists the images that the
# labforge hub publishes for each user.
#
# Needs, in the hub's environment:
#   LABFORGE_HUB_URL      e.g. http://labforge-hub.labforge.svc:8080 (required)
#   LABFORGE_HUB_TOKEN    bearer token, when the labforge hub protects reads
#   LABFORGE_HUB_TIMEOUT  seconds, default 5
#
# labforge_profiles.py must sit next to this file (or set LABFORGE_PROFILES_PY
# to its path). It is loaded as a module, so a missing file stops the hub at
# start-up instead of silently leaving the spawn form empty (traitlets'
# load_subconfig skips a missing file without a word).
import importlib.util
import os

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"

_snippet_path = os.environ.get("LABFORGE_PROFILES_PY") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "labforge_profiles.py"
)
_spec = importlib.util.spec_from_file_location("labforge_profiles", _snippet_path)
labforge_profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labforge_profiles)

# A callable: KubeSpawner calls it for the spawn form and again at start-up.
c.KubeSpawner.profile_list = labforge_profiles.labforge_profile_list

# The profiles' kubespawner_override merges into / replaces these settings.
# A profile's `tolerations` list REPLACES this list, so labforge profiles for
# tainted GPU nodes repeat these two; `volumes`/`volume_mounts` are dicts keyed
# by volume name so that profile overrides add to the home volume.
c.KubeSpawner.tolerations = [
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]
c.KubeSpawner.pvc_name_template = "claim-{user_server}"
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.volumes = {
    "volume-{user_server}": {
        "name": "volume-{user_server}",
        "persistentVolumeClaim": {"claimName": "{pvc_name}"},
    }
}
c.KubeSpawner.volume_mounts = {
    "volume-{user_server}": {"mountPath": "/home/jovyan", "name": "volume-{user_server}"}
}
