"""Typed async client of the ACA-Py 0.12 admin API calls Cartera uses (httpx).

Every call has a timeout; a refused connection or a timeout becomes
:class:`~aries.errors.AgentUnavailable` and an error status :class:`~aries.errors.AgentRequestFailed`,
so callers (services, CLI) show one clear message instead of a transport traceback. Bodies are never
logged: they carry personal data.
"""

from __future__ import annotations

from typing import Any

import httpx

from .errors import AgentRequestFailed, AgentUnavailable

DIDEXCHANGE = "https://didcomm.org/didexchange/1.0"
BBS = "BbsBlsSignature2020"
ED25519 = "Ed25519Signature2020"
KEY_TYPES = {BBS: "bls12381g2", ED25519: "ed25519"}

JSON = dict[str, Any]


class AdminClient:
    """Client of one agent's admin API (``x-api-key`` authentication)."""

    def __init__(self, admin_url: str, api_key: str, *, timeout: float = 15.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._headers = {"x-api-key": api_key}
        self._timeout = timeout
        self._client = client
        self._owned = client is None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying HTTP client if this object created it."""
        if self._client is not None and self._owned:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def request(self, method: str, path: str, *, json: JSON | None = None,
                      params: dict[str, Any] | None = None) -> Any:
        """One admin call; returns the decoded JSON answer."""
        url = f"{self.admin_url}{path}"
        try:
            answer = await self._http().request(method, url, json=json, params=params, headers=self._headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise AgentUnavailable(f"agent at {self.admin_url} is not reachable") from exc
        except httpx.TimeoutException as exc:
            raise AgentUnavailable(f"agent at {self.admin_url} did not answer {method} {path} in time",
                                   maybe_done=True) from exc
        except httpx.TransportError as exc:
            raise AgentUnavailable(f"agent at {self.admin_url} dropped the call {method} {path}",
                                   maybe_done=True) from exc
        if answer.status_code >= 400:
            # ACA-Py answers errors as text; keep a short, claim-free prefix for the operator.
            raise AgentRequestFailed(answer.status_code,
                                     f"{method} {path} answered {answer.status_code}: {answer.text[:200]}")
        try:
            return answer.json()
        except ValueError as exc:
            raise AgentRequestFailed(answer.status_code, f"{method} {path} answered non-JSON") from exc

    # -- status and DIDs ---------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Whether the agent reports itself ready."""
        return bool((await self.request("GET", "/status/ready")).get("ready"))

    async def create_did_key(self, proof_type: str = BBS) -> str:
        """Create a did:key for the given signature suite (BBS+ needs bls12381g2, Ed25519 ed25519)."""
        answer = await self.request("POST", "/wallet/did/create",
                                    json={"method": "key", "options": {"key_type": KEY_TYPES[proof_type]}})
        return str(answer["result"]["did"])

    async def list_dids(self, method: str = "key") -> list[JSON]:
        """The wallet's DIDs of one method."""
        return list((await self.request("GET", "/wallet/did", params={"method": method})).get("results", []))

    # -- out-of-band and connections ---------------------------------------------------------------

    async def create_invitation(self, *, alias: str | None = None, handshake: bool = True,
                                attachments: list[JSON] | None = None, label: str | None = None) -> JSON:
        """An out-of-band 1.1 invitation (``create_unique_did=true``: a returning wallet gets a new DID)."""
        body: JSON = {"handshake_protocols": [DIDEXCHANGE] if handshake else [],
                      "use_public_did": False}
        if handshake:
            # ACA-Py only mints a fresh DID per invitation for did:peer methods.
            body["use_did_method"] = "did:peer:2"
        if alias:
            body["alias"] = alias
        if label:
            body["my_label"] = label
        if attachments:
            body["attachments"] = attachments
        params = {"auto_accept": "true", "create_unique_did": "true" if handshake else "false"}
        return dict(await self.request("POST", "/out-of-band/create-invitation", json=body, params=params))

    async def receive_invitation(self, invitation: JSON, *, alias: str | None = None) -> JSON:
        """Accept an invitation (the holder side)."""
        params = {"auto_accept": "true"}
        if alias:
            params["alias"] = alias
        return dict(await self.request("POST", "/out-of-band/receive-invitation", json=invitation, params=params))

    async def connection(self, connection_id: str) -> JSON:
        """One connection record."""
        return dict(await self.request("GET", f"/connections/{connection_id}"))

    async def connections(self, **filters: str) -> list[JSON]:
        """Connection records matching the filters (e.g. ``invitation_msg_id``)."""
        return list((await self.request("GET", "/connections", params=filters)).get("results", []))

    # -- issue-credential 2.0 ----------------------------------------------------------------------

    async def send_ld_offer(self, connection_id: str, credential: JSON, proof_type: str, *,
                            comment: str | None = None) -> JSON:
        """Offer a JSON-LD credential (``ld_proof`` format) on a connection."""
        options: JSON = {"proofType": proof_type}
        status = credential.get("credentialStatus")
        if isinstance(status, dict) and status.get("type"):
            # The holder's ACA-Py refuses a credential whose status the request's options did not announce.
            options["credentialStatus"] = {"type": status["type"]}
        body: JSON = {
            "connection_id": connection_id,
            "auto_remove": False,
            "filter": {"ld_proof": {"credential": credential, "options": options}},
        }
        if comment:
            body["comment"] = comment
        return dict(await self.request("POST", "/issue-credential-2.0/send-offer", json=body))

    async def cred_record(self, cred_ex_id: str) -> JSON:
        """One credential exchange record (with its ``by_format`` detail)."""
        return dict(await self.request("GET", f"/issue-credential-2.0/records/{cred_ex_id}"))

    async def delete_cred_record(self, cred_ex_id: str) -> None:
        """Remove a credential exchange record (and the credential it holds) from the agent."""
        await self.request("DELETE", f"/issue-credential-2.0/records/{cred_ex_id}")

    async def cred_records(self, **filters: str) -> list[JSON]:
        """Credential exchange records matching the filters."""
        return list((await self.request("GET", "/issue-credential-2.0/records", params=filters)).get("results", []))

    async def cred_problem_report(self, cred_ex_id: str, description: str) -> None:
        """Abandon a credential exchange and tell the other party why (a problem report on its connection)."""
        await self.request("POST", f"/issue-credential-2.0/records/{cred_ex_id}/problem-report",
                           json={"description": description})

    async def send_cred_request(self, cred_ex_id: str, holder_did: str | None = None) -> JSON:
        """Holder side: request the offered credential. BBS+ needs the holder's own bls12381g2 did:key."""
        body: JSON = {"holder_did": holder_did} if holder_did else {}
        return dict(await self.request("POST", f"/issue-credential-2.0/records/{cred_ex_id}/send-request", json=body))

    async def issue(self, cred_ex_id: str) -> JSON:
        """Issuer side: issue on a received request."""
        return dict(await self.request("POST", f"/issue-credential-2.0/records/{cred_ex_id}/issue", json={}))

    async def store_credential(self, cred_ex_id: str) -> JSON:
        """Holder side: store a received credential."""
        return dict(await self.request("POST", f"/issue-credential-2.0/records/{cred_ex_id}/store", json={}))

    async def w3c_credentials(self, **query: Any) -> list[JSON]:
        """Holder side: the W3C credentials in the wallet."""
        return list((await self.request("POST", "/credentials/w3c", json=query)).get("results", []))

    # -- present-proof 2.0 -------------------------------------------------------------------------

    async def create_dif_request(self, presentation_definition: JSON, challenge: str, domain: str, *,
                                 comment: str | None = None) -> JSON:
        """A connectionless present-proof 2.0 request with a DIF presentation definition.

        ``auto_verify`` is false: ACA-Py keeps it on the exchange record and, when true, verifies the
        presentation as it arrives, loading every context the holder named (fetched with no timeout,
        following redirects, outside the outbound policy). The verifier asks for the verification itself
        (:meth:`verify_presentation`) once its precheck passed."""
        body: JSON = {
            "auto_verify": False,
            "auto_remove": False,
            "presentation_request": {"dif": {"options": {"challenge": challenge, "domain": domain},
                                             "presentation_definition": presentation_definition}},
        }
        if comment:
            body["comment"] = comment
        return dict(await self.request("POST", "/present-proof-2.0/create-request", json=body))

    async def pres_record(self, pres_ex_id: str) -> JSON:
        """One presentation exchange record."""
        return dict(await self.request("GET", f"/present-proof-2.0/records/{pres_ex_id}"))

    async def verify_presentation(self, pres_ex_id: str) -> JSON:
        """Verifier side: verify a received presentation (an agent run without ``--auto-verify-presentation``)."""
        return dict(await self.request("POST", f"/present-proof-2.0/records/{pres_ex_id}/verify-presentation",
                                       json={}))

    async def delete_pres_record(self, pres_ex_id: str) -> None:
        """Remove a presentation exchange record (and the presentation it holds) from the agent."""
        await self.request("DELETE", f"/present-proof-2.0/records/{pres_ex_id}")

    async def pres_records(self, **filters: str) -> list[JSON]:
        """Presentation exchange records matching the filters."""
        return list((await self.request("GET", "/present-proof-2.0/records", params=filters)).get("results", []))

    async def matching_credentials(self, pres_ex_id: str, count: int = 100) -> list[JSON]:
        """Holder side: the stored credentials that match a request (ACA-Py pages them, 10 by default)."""
        return list(await self.request("GET", f"/present-proof-2.0/records/{pres_ex_id}/credentials",
                                       params={"start": "0", "count": str(count)}))

    async def send_presentation(self, pres_ex_id: str, record_ids: dict[str, list[str]]) -> JSON:
        """Holder side: answer with a DIF presentation from the chosen credential records."""
        body = {"dif": {"record_ids": record_ids}}
        return dict(await self.request("POST", f"/present-proof-2.0/records/{pres_ex_id}/send-presentation",
                                       json=body))
