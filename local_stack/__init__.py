"""Label Studio + this backend as local processes: used by the demo (scripts/run_demo.py) and the end-to-end tests."""
from .ls_client import (APIError, LabelStudioAPI, TokenExistsError, create_personal_access_token, create_user,
                        login_session)
from .procutil import (ADMIN_EMAIL, ADMIN_PASSWORD, REPO, StartError, free_port, label_studio_bin, port_in_use,
                       stop_process, wait_until)
from .servers import BackendServer, LabelStudioServer

__all__ = ["ADMIN_EMAIL", "ADMIN_PASSWORD", "APIError", "BackendServer", "LabelStudioAPI", "LabelStudioServer", "REPO",
           "StartError", "TokenExistsError", "create_personal_access_token", "create_user", "free_port", "label_studio_bin",
           "login_session", "port_in_use", "stop_process", "wait_until"]
