"""Jobs and data → Access: the organiser invites people, lists and revokes invitations, and
enforces blind mode for annotators. Not a page; the same as `stepscope access` (README)."""

from __future__ import annotations

import urllib.parse

import pandas as pd
import streamlit as st

from core.errors import StepScopeError
from core.store import Store
from core.store.access import ROLES, invitation_link, parse_lifetime
from core.views.access import BLIND_SETTING, EDIT_PROJECT, MANAGE_ACCESS
from pages._access import act, remote, require_action
from pages._shared import error_box, md


def _app_address() -> str:
    """This app's address as the organiser's browser sees it (scheme, host, port; no page)."""
    parts = urllib.parse.urlsplit(st.context.url or "http://localhost:8501")
    return f"{parts.scheme}://{parts.netloc}"


def access_section(store: Store) -> None:
    require_action(MANAGE_ACCESS)
    state = st.session_state
    st.subheader("Access")
    st.caption("Served beyond this machine, the app opens data only through personal links."
               + (" It is served that way now." if remote() else " It listens on this machine only now."))
    with st.form("jd_invite", clear_on_submit=True):
        cols = st.columns([2, 1, 1, 3])
        name = cols[0].text_input("Name", max_chars=40, help="their labels are saved under this name")
        role = cols[1].selectbox("Role", ROLES, index=1)
        expires = cols[2].text_input("Expires in", value="7d", max_chars=10, help="a number and s, m, h, d or w")
        address = cols[3].text_input("App address in the link", value=_app_address(), max_chars=300)
        invited = st.form_submit_button("Invite")
    if invited and act(MANAGE_ACCESS):
        try:
            lifetime = parse_lifetime(expires)
            invitation_link(address, store.path.name, "x")  # a bad address fails before anything is saved
            invitation, token = store.create_invitation(name, role, lifetime)
            # Kept only for this run: shown once, as the CLI does; never stored or logged.
            st.success(md(f"Invitation {invitation.id}: {invitation.name} as {invitation.role}, until "
                          f"{invitation.expires_at}. Send this link privately; it is not shown again:"))
            st.code(invitation_link(address, store.path.name, token), language=None, wrap_lines=True)
        except StepScopeError as error:
            error_box("Cannot invite", error)
    invitations = store.invitations()
    if invitations:
        st.dataframe(pd.DataFrame([{"id": i.id, "name": i.name, "role": i.role, "state": i.state(),
                                    "expires": i.expires_at, "last used": i.last_used_at or ""}
                                   for i in invitations]), hide_index=True, width="stretch")  # fmt: skip
        active = [i for i in invitations if i.revoked_at is None]
        if active:
            cols = st.columns([2, 1, 4])
            chosen = cols[0].selectbox("Invitation", [i.id for i in active], key="jd_revoke_id",
                                       format_func=lambda i: next(f"{v.id}: {v.name} ({v.role})" for v in active if v.id == i))
            if cols[1].button("Revoke", key="jd_revoke", width="stretch") and act(MANAGE_ACCESS):
                try:
                    revoked = store.revoke_invitations(str(chosen))
                    state["jd_access_message"] = f"invitation {revoked[0].id} ({revoked[0].name}) revoked"
                except StepScopeError as error:
                    error_box("Cannot revoke", error)
                else:
                    st.rerun()
    else:
        st.caption("No invitations yet.")
    if message := state.pop("jd_access_message", None):
        st.success(md(message))
    enforced = bool(store.setting(BLIND_SETTING, False))
    if st.toggle("Blind mode for annotators", value=enforced, key="jd_blind",
                 help="invited annotators cannot see automatic labels before they submit a trajectory") != enforced \
            and act(EDIT_PROJECT):
        store.set_setting(BLIND_SETTING, not enforced)
        st.rerun()
