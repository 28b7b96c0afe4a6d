"""Closing the loop after a provider accepted a message.

* :mod:`~clarion.receipts.sns`: SES events through Amazon SNS, verified
  (signature versions 1 and 2, the certificate's host, the topic) and mapped
  to delivery reports;
* :mod:`~clarion.receipts.twilio_status`: Twilio ``StatusCallback`` requests,
  validated with the twilio package's own ``RequestValidator``;
* :mod:`~clarion.receipts.service`: what ``clarion web`` calls (its router is
  :mod:`clarion.web.receipts`), applying reports with :mod:`models.receipts`;
* :mod:`~clarion.receipts.commands`: ``clarion suppression list/add/remove``.
"""
