"""A holder's present-proof 2.0 problem report on a connectionless request: the request is declined.

Runs INSIDE the ACA-Py 0.12.8 process (imported by the plugin's ``setup``, never by Cartera). The
verifier's proof requests are connectionless (an out-of-band invitation with the request attached, no
DID exchange). A holder that refuses one sends a problem report; ACA-Py's own handler
(``V20PresProblemReportHandler``) reads ``context.connection_record.connection_id`` and, there being
no connection, fails with ``AttributeError`` in the dispatcher: the verifier's record stays
``request-sent`` and the refusal is lost. ACA-Py does find connectionless *presentations* (through
the out-of-band record the message answers); its problem report handler never learnt to.

:func:`register` replaces the message class of ``present-proof/2.0/problem-report`` (both DIDComm
prefixes) in the agent's protocol registry with a subclass whose handler is :class:`DeclineHandler`:

- a report on a connection goes to ACA-Py's handler, unchanged;
- a report without one abandons the verifier's record of that thread, as ACA-Py's handler does on a
  connection, only when all of these hold: it answers an out-of-band invitation this agent sent, on
  the thread of the request attached to it (ACA-Py's ``OobMessageProcessor``, which also holds the
  sender to the key of whoever answered first), encrypted to that invitation's key; the record is the
  verifier's, without a connection, and still ``request-sent``. A report after a presentation arrived
  changes nothing: that presentation is judged, and whoever saw the invitation cannot spoil it.

Anything else is dropped with a warning that names no content (the report's text is the holder's).
"""

import logging

from aries_cloudagent.core.oob_processor import OobMessageProcessor
from aries_cloudagent.core.protocol_registry import ProtocolRegistry
from aries_cloudagent.messaging.base_handler import BaseHandler
from aries_cloudagent.protocols.didcomm_prefix import DIDCommPrefix
from aries_cloudagent.protocols.out_of_band.v1_0.models.oob_record import OobRecord
from aries_cloudagent.protocols.present_proof.v2_0.handlers.pres_problem_report_handler import (
    V20PresProblemReportHandler,
)
from aries_cloudagent.protocols.present_proof.v2_0.message_types import PRES_20_PROBLEM_REPORT
from aries_cloudagent.protocols.present_proof.v2_0.messages.pres_problem_report import (
    ProblemReportReason,
    V20PresProblemReport,
    V20PresProblemReportSchema,
)
from aries_cloudagent.protocols.present_proof.v2_0.models.pres_exchange import V20PresExRecord
from aries_cloudagent.storage.error import StorageError, StorageNotFoundError

LOGGER = logging.getLogger(__name__)

#: The stored reason is ``<code>: <text>`` as ACA-Py writes it, cut to this many characters.
MAX_ERROR_MSG = 200


class DeclineHandler(BaseHandler):
    """ACA-Py's handler on a connection; on a connectionless request, the checks of the module doc."""

    async def handle(self, context, responder):
        """Abandon the verifier's ``request-sent`` record the report answers, or drop the report."""
        assert isinstance(context.message, V20PresProblemReport)
        if context.connection_record is not None:
            await V20PresProblemReportHandler().handle(context, responder)
            return
        message = context.message
        receipt = context.message_receipt
        thread_id = message._thread_id
        oob_record = await context.inject(OobMessageProcessor).find_oob_record_for_inbound_message(context)
        if (
            oob_record is None
            or oob_record.role != OobRecord.ROLE_SENDER
            or not thread_id
            or oob_record.attach_thread_id != thread_id
            or not receipt.recipient_verkey
            or receipt.recipient_verkey != oob_record.our_recipient_key
        ):
            LOGGER.warning("present-proof problem report without a connection answers no request of ours: dropped")
            return
        code = message.description.get("code", ProblemReportReason.ABANDONED.value) if message.description else None
        text = message.description.get("en", code) if message.description else None
        try:
            async with context.profile.transaction() as txn:
                record = await V20PresExRecord.retrieve_by_tag_filter(
                    txn,
                    {"thread_id": thread_id},
                    {"role": V20PresExRecord.ROLE_VERIFIER, "connection_id": None},
                    for_update=True,
                )
                if record.state != V20PresExRecord.STATE_REQUEST_SENT:
                    LOGGER.warning(
                        "present-proof problem report on request %s in state %s: ignored",
                        record.pres_ex_id,
                        record.state,
                    )
                    return
                record.state = V20PresExRecord.STATE_ABANDONED
                record.error_msg = f"{code or ProblemReportReason.ABANDONED.value}: {text or ''}"[:MAX_ERROR_MSG]
                # In a transaction, the webhook is sent once the new state is committed.
                await record.save(txn, reason="received problem report")
                await txn.commit()
        except StorageNotFoundError:
            LOGGER.warning("present-proof problem report without a connection for no verifier record: dropped")
        except StorageError:
            LOGGER.exception("present-proof problem report could not be recorded")


class DeclineReport(V20PresProblemReport):
    """``present-proof/2.0/problem-report`` handled by :class:`DeclineHandler`."""

    class Meta:
        """Same message, another handler."""

        handler_class = f"{__name__}.DeclineHandler"
        schema_class = "DeclineReportSchema"
        message_type = PRES_20_PROBLEM_REPORT


class DeclineReportSchema(V20PresProblemReportSchema):
    """ACA-Py's schema, building a :class:`DeclineReport`."""

    class Meta(V20PresProblemReportSchema.Meta):
        """Schema metadata."""

        model_class = DeclineReport


def register(context):
    """Point ``present-proof/2.0/problem-report`` (both DIDComm prefixes) at :class:`DeclineReport`.

    Plugins are set up after ACA-Py's own protocols (``PluginRegistry.init_context``), so this
    replaces the registration ``present_proof.v2_0`` made."""
    registry = context.inject(ProtocolRegistry)
    registry.register_message_types(DIDCommPrefix.qualify_all({PRES_20_PROBLEM_REPORT: DeclineReport}))
    LOGGER.info("cartera_contexts: connectionless present-proof problem reports are recorded")
