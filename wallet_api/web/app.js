"use strict";
// Cartera web wallet: plain script, no build step, no dependency but the vendored QR decoder (jsQR).
// It is a client of the public /v1 API like any other wallet app: tokens stay in this tab
// (sessionStorage), nothing is rendered with innerHTML (every value goes through textContent).
(function () {
  var T = {
    ca: {
      evidenceTitle: "Per què l'emissor ha consultat el registre", evidenceProcedure: "Procediment",
      evidenceBasis: "Base jurídica", basis_consent: "El teu consentiment", basis_law: "Ho permet una llei",
      basis_no_objection: "No t'hi has oposat", evidenceOfficial: "Responsable de la consulta",
      evidenceSource: "Registre consultat", evidenceWhen: "Data de la consulta", evidenceReference: "Referència de la consulta",
      checkNow: "Comprova-ho ara", askAction: "Demana-la a un emissor", catalogueTitle: "Demana una credencial a un emissor", catalogueIntro: "L'emissor et demanarà que iniciïs la sessió i després la credencial arribarà a la cartera.", request: "Demana «{0}»", unavailable: "Ara no està disponible.", issuanceFailed: "L'emissor no ha lliurat la credencial.",
      search: "Cerca", pinTitle: "PIN", currentPin: "PIN actual", newPin: "PIN nou (de 4 a 12 xifres; buit, l'elimina)", savePin: "Desa el PIN", pinOn: "Compartir demana el PIN.", pinOff: "Compartir no demana cap PIN.", pinSaved: "PIN desat.", endSession: "Tanca aquesta sessió", sessionEnded: "Sessió tancada.", asked: "Es demana: {0}",
      skip: "Salta al contingut", language: "Llengua", navCards: "Targetes", navScan: "Escaneja", navHistory: "Historial",
      navAlerts: "Avisos", navSettings: "Jo", loginTitle: "Les teves credencials, al mòbil",
      loginIntro: "Inicia la sessió per veure les teves credencials, rebre'n de noves i compartir-les.",
      loginWith: "Inicia la sessió amb {0}", cardsTitle: "Les meves credencials",
      cardsEmpty: "Encara no tens cap credencial. Escaneja el codi QR d'una oferta per rebre'n una.",
      scanAction: "Escaneja un codi QR", back: "Torna", claims: "Dades", delete: "Esborra aquesta credencial",
      confirmDelete: "Sí, esborra-la definitivament", deleted: "Credencial esborrada.",
      scanTitle: "Escaneja un codi QR", scanIntro: "Apunta la càmera a una oferta o a una sol·licitud, o enganxa l'enllaç.",
      cameraStart: "Fes servir la càmera", cameraStop: "Atura la càmera", photo: "O llegeix una foto del codi",
      pasteLabel: "Enllaç (openid-credential-offer:// o openid4vp://)", open: "Obre",
      noCamera: "No es pot fer servir la càmera en aquest dispositiu. Prova amb una foto o enganxa l'enllaç.",
      noCode: "No s'hi ha trobat cap codi QR.", unknownLink: "Aquest codi no és una oferta ni una sol·licitud de credencials.",
      offerTitle: "Oferta de credencial", offeredBy: "L'ofereix", txCode: "Codi de transacció",
      txHelp: "L'emissor te l'ha donat per un altre canal.", txDigits: "{0} xifres.", accept: "Accepta", notNow: "Ara no",
      received: "S'ha afegit a la teva cartera.", pending: "L'emissor la lliurarà més endavant; rebràs un avís.",
      seeCard: "Mostra la credencial", requestTitle: "Vols compartir les teves dades?", whoAsks: "Qui ho demana",
      verified: "identitat verificada", unverified: "Verificador no verificat",
      unverifiedWarning: "No s'ha pogut confirmar qui fa aquesta sol·licitud. No comparteixis dades reals.",
      purpose: "Finalitat", willShare: "Es compartirà de «{0}» ({1}):", optionalShare: "Comparteix-ho també (opcional)",
      chooseCredential: "Quina credencial?", notShared: "Això no es compartirà.", cannotShare: "No tens cap credencial vàlida que respongui aquesta sol·licitud.",
      pin: "PIN de la cartera", approve: "Comparteix", decline: "Rebutja", shared: "Compartit amb {0}.",
      declined: "Has rebutjat la sol·licitud: no s'ha compartit res.", continueAt: "Continua",
      alreadyAnswered: "Aquesta sol·licitud ja s'ha respost.", historyTitle: "Historial", alertsTitle: "Avisos",
      markRead: "Marca-ho tot com a llegit", noEntries: "Res per ara.", settingsTitle: "Jo", logins: "Els meus inicis de sessió",
      backup: "Còpia de seguretat", passphrase: "Contrasenya de la còpia (10 caràcters com a mínim)",
      export: "Exporta una còpia", import: "Importa una còpia", backupFile: "Fitxer de la còpia",
      exported: "Còpia exportada.", imported: "Còpia importada: {0} credencials afegides.", logout: "Tanca la sessió",
      working: "Un moment…", status_valid: "Vàlida", status_suspended: "Suspesa", status_revoked: "Revocada",
      status_expired: "Caducada", validUntil: "Vàlida fins al {0}", issuedBy: "Emesa per {0}",
      kind_receipt: "Rebuda", kind_share: "Compartida", kind_decline: "Rebutjada", kind_deletion: "Esborrada",
      kind_imported: "{0} (importada d'una còpia)", kind_restore: "Còpia restaurada", restored: "{0} credencials restaurades",
      importedEntry: "Importada d'una còpia", entryUnreadable: "Aquesta entrada no es pot llegir.",
      credentialUnreadable: "Les dades d'aquesta credencial no es poden llegir. Esborreu-la i torneu-la a rebre.",
      alert_offer_received: "Nova oferta", alert_credential_received: "Credencial rebuda",
      alert_issuance_pending: "Emissió pendent", alert_expiring: "Caducarà aviat", alert_suspended: "Credencial suspesa",
      alert_revoked: "Credencial revocada", alert_reinstated: "Credencial restablerta", unread: "sense llegir",
      current: "aquesta sessió", err_invalid_tx_code: "El codi de transacció no és correcte.",
      err_tx_code_required: "Cal el codi de transacció.", err_untrusted_verifier: "El verificador no és de confiança: no s'ha enviat res.",
      err_invalid_request_object: "La sol·licitud no és vàlida: no s'ha enviat res.", err_invalid_offer: "L'oferta no és vàlida.",
      err_unsatisfiable: "No tens les credencials que es demanen.", err_invalid_pin: "El PIN no és correcte.", err_pin_required: "Escriu el PIN de la cartera.",
      err_pin_locked: "Massa intents: torna-ho a provar més tard, o restableix el PIN («Has oblidat el PIN?»).", err_invalid_backup: "La contrasenya o el fitxer no són correctes.",
      err_foreign_backup: "Aquesta còpia no és d'aquesta cartera (o s'ha modificat): no s'ha importat res.",
      err_invalid_request: "Les dades no són vàlides.", err_generic: "No s'ha pogut fer ({0}).", err_network: "No hi ha connexió amb el servei.",
      loginFailed: "No s'ha pogut iniciar la sessió.",
      tabCopied: "Aquesta pestanya és una còpia d'una altra: inicia-hi la sessió (l'altra continua oberta).",
      forgotPin: "Has oblidat el PIN?", resetTitle: "Restableix el PIN",
      resetIntro: "Si has oblidat el PIN, o s'ha bloquejat per massa intents, en pots posar un de nou sense saber l'actual.",
      resetNeedsLogin: "Primer tornes a iniciar la sessió amb el teu proveïdor d'identitat: només un inici de sessió de fa pocs minuts permet restablir el PIN.",
      resetEndsSessions: "Es tancaran les altres sessions de la cartera: els altres dispositius i navegadors hauran de tornar a iniciar la sessió.",
      resetLoginWith: "Torna a iniciar la sessió amb {0}", resetWho: "Cartera de {0}", resetNewPin: "PIN nou",
      pinRules: "De 4 a 12 xifres, només números.", resetRepeat: "Repeteix el PIN nou", resetSave: "Desa el PIN nou",
      resetDone: "S'ha desat el PIN nou. S'han tancat les altres sessions de la cartera.", backToRequest: "Torna a la sol·licitud",
      resetNetwork: "No hi ha connexió amb el servei: el PIN no s'ha canviat. Comprova la connexió i torna-ho a provar.",
      err_pin_rules: "El PIN ha de tenir de 4 a 12 xifres (només números).", err_pin_mismatch: "Els dos PIN no coincideixen: torna'ls a escriure.",
      err_recent_login_required: "L'inici de sessió ja no és prou recent per restablir el PIN (ha de ser de fa pocs minuts). Torna a iniciar la sessió i desa el PIN nou tot seguit.",
      err_pin_reset_required: "Cal restablir el PIN de la cartera: tria «Has oblidat el PIN?».",
      err_credential_unreadable: "Les dades de la credencial triada no es poden llegir: no s'ha enviat res. Tria'n una altra, si n'hi ha, o rebutja la sol·licitud.",
      err_conflict: "La sol·licitud ha canviat mentre era oberta: no s'ha enviat res.",
      conflictOther: "La sol·licitud ha canviat mentre era oberta: no s'ha enviat res. Es torna a mostrar tal com és ara.",
      conflictAnswered: "Aquesta sol·licitud ja s'ha respost, potser des d'un altre dispositiu: no s'ha enviat res més.",
      conflictExpired: "Aquesta sol·licitud ha caducat mentre era oberta: no s'ha enviat res. Demana'n una de nova al verificador.",
      conflictDeleted: "La credencial triada ja no és a la cartera: no s'ha enviat res. Tria'n una altra, si n'hi ha, o rebutja la sol·licitud.",
      conflictChanged: "La credencial triada ara compartiria dades diferents de les mostrades: no s'ha enviat res. Rebutja la sol·licitud i demana'n una de nova al verificador.",
      requestExpired: "Aquesta sol·licitud ha caducat: ja no es pot respondre. Demana'n una de nova al verificador.",
      backToCards: "Torna a les meves credencials",
      reloadRequest: "Torna a carregar la sol·licitud",
      unreadableOne: "Una credencial d'aquest tipus de la cartera no es pot llegir i per això no s'ofereix.",
      unreadableMany: "{0} credencials d'aquest tipus de la cartera no es poden llegir i per això no s'ofereixen.",
      backupSkippedOne: "1 element no s'ha pogut llegir i no és en aquesta còpia.",
      backupSkipped: "{0} elements no s'han pogut llegir i no són en aquesta còpia.",
      pinLockedEnded: "Massa PIN incorrectes: s'han tancat totes les sessions de la cartera. Torna a iniciar la sessió; si has oblidat el PIN, restableix-lo tot seguit des de «Jo».",
      alert_pin_set: "PIN establert", alert_pin_changed: "PIN canviat", alert_pin_removed: "PIN eliminat",
      alert_pin_reset: "PIN restablert", alert_pin_locked: "PIN bloquejat"
    },
    es: {
      evidenceTitle: "Por qué el emisor ha consultado el registro", evidenceProcedure: "Procedimiento",
      evidenceBasis: "Base jurídica", basis_consent: "Tu consentimiento", basis_law: "Lo permite una ley",
      basis_no_objection: "No te has opuesto", evidenceOfficial: "Responsable de la consulta",
      evidenceSource: "Registro consultado", evidenceWhen: "Fecha de la consulta", evidenceReference: "Referencia de la consulta",
      checkNow: "Comprobar ahora", askAction: "Pedirla a un emisor", catalogueTitle: "Pedir una credencial a un emisor", catalogueIntro: "El emisor te pedirá que inicies sesión y después la credencial llegará a tu cartera.", request: "Pedir «{0}»", unavailable: "Ahora no está disponible.", issuanceFailed: "El emisor no ha entregado la credencial.",
      search: "Buscar", pinTitle: "PIN", currentPin: "PIN actual", newPin: "PIN nuevo (de 4 a 12 cifras; vacío, lo elimina)", savePin: "Guardar el PIN", pinOn: "Compartir pide el PIN.", pinOff: "Compartir no pide ningún PIN.", pinSaved: "PIN guardado.", endSession: "Cerrar esta sesión", sessionEnded: "Sesión cerrada.", asked: "Se pide: {0}",
      skip: "Saltar al contenido", language: "Idioma", navCards: "Tarjetas", navScan: "Escanear", navHistory: "Historial",
      navAlerts: "Avisos", navSettings: "Yo", loginTitle: "Tus credenciales, en el móvil",
      loginIntro: "Inicia sesión para ver tus credenciales, recibir nuevas y compartirlas.",
      loginWith: "Iniciar sesión con {0}", cardsTitle: "Mis credenciales",
      cardsEmpty: "Aún no tienes ninguna credencial. Escanea el código QR de una oferta para recibir una.",
      scanAction: "Escanear un código QR", back: "Volver", claims: "Datos", delete: "Borrar esta credencial",
      confirmDelete: "Sí, borrarla definitivamente", deleted: "Credencial borrada.",
      scanTitle: "Escanear un código QR", scanIntro: "Apunta la cámara a una oferta o una solicitud, o pega el enlace.",
      cameraStart: "Usar la cámara", cameraStop: "Detener la cámara", photo: "O leer una foto del código",
      pasteLabel: "Enlace (openid-credential-offer:// u openid4vp://)", open: "Abrir",
      noCamera: "No se puede usar la cámara en este dispositivo. Prueba con una foto o pega el enlace.",
      noCode: "No se ha encontrado ningún código QR.", unknownLink: "Este código no es una oferta ni una solicitud de credenciales.",
      offerTitle: "Oferta de credencial", offeredBy: "La ofrece", txCode: "Código de transacción",
      txHelp: "El emisor te lo ha dado por otro canal.", txDigits: "{0} cifras.", accept: "Aceptar", notNow: "Ahora no",
      received: "Se ha añadido a tu cartera.", pending: "El emisor la entregará más adelante; recibirás un aviso.",
      seeCard: "Ver la credencial", requestTitle: "¿Quieres compartir tus datos?", whoAsks: "Quién lo pide",
      verified: "identidad verificada", unverified: "Verificador no verificado",
      unverifiedWarning: "No se ha podido confirmar quién hace esta solicitud. No compartas datos reales.",
      purpose: "Finalidad", willShare: "Se compartirá de «{0}» ({1}):", optionalShare: "Compartir también (opcional)",
      chooseCredential: "¿Qué credencial?", notShared: "Esto no se compartirá.", cannotShare: "No tienes ninguna credencial válida que responda a esta solicitud.",
      pin: "PIN de la cartera", approve: "Compartir", decline: "Rechazar", shared: "Compartido con {0}.",
      declined: "Has rechazado la solicitud: no se ha compartido nada.", continueAt: "Continuar",
      alreadyAnswered: "Esta solicitud ya se ha respondido.", historyTitle: "Historial", alertsTitle: "Avisos",
      markRead: "Marcar todo como leído", noEntries: "Nada por ahora.", settingsTitle: "Yo", logins: "Mis inicios de sesión",
      backup: "Copia de seguridad", passphrase: "Contraseña de la copia (al menos 10 caracteres)",
      export: "Exportar una copia", import: "Importar una copia", backupFile: "Archivo de la copia",
      exported: "Copia exportada.", imported: "Copia importada: {0} credenciales añadidas.", logout: "Cerrar sesión",
      working: "Un momento…", status_valid: "Válida", status_suspended: "Suspendida", status_revoked: "Revocada",
      status_expired: "Caducada", validUntil: "Válida hasta el {0}", issuedBy: "Emitida por {0}",
      kind_receipt: "Recibida", kind_share: "Compartida", kind_decline: "Rechazada", kind_deletion: "Borrada",
      kind_imported: "{0} (importada de una copia)", kind_restore: "Copia restaurada", restored: "{0} credenciales restauradas",
      importedEntry: "Importada de una copia", entryUnreadable: "Esta entrada no se puede leer.",
      credentialUnreadable: "Los datos de esta credencial no se pueden leer. Bórrela y vuelva a recibirla.",
      alert_offer_received: "Nueva oferta", alert_credential_received: "Credencial recibida",
      alert_issuance_pending: "Emisión pendiente", alert_expiring: "Caducará pronto", alert_suspended: "Credencial suspendida",
      alert_revoked: "Credencial revocada", alert_reinstated: "Credencial restablecida", unread: "sin leer",
      current: "esta sesión", err_invalid_tx_code: "El código de transacción no es correcto.",
      err_tx_code_required: "Hace falta el código de transacción.", err_untrusted_verifier: "El verificador no es de confianza: no se ha enviado nada.",
      err_invalid_request_object: "La solicitud no es válida: no se ha enviado nada.", err_invalid_offer: "La oferta no es válida.",
      err_unsatisfiable: "No tienes las credenciales que se piden.", err_invalid_pin: "El PIN no es correcto.", err_pin_required: "Escribe el PIN de la cartera.",
      err_pin_locked: "Demasiados intentos: vuelve a probar más tarde, o restablece el PIN («¿Has olvidado el PIN?»).", err_invalid_backup: "La contraseña o el archivo no son correctos.",
      err_foreign_backup: "Esta copia no es de esta cartera (o se ha modificado): no se ha importado nada.",
      err_invalid_request: "Los datos no son válidos.", err_generic: "No se ha podido hacer ({0}).", err_network: "No hay conexión con el servicio.",
      loginFailed: "No se ha podido iniciar sesión.",
      tabCopied: "Esta pestaña es una copia de otra: inicia sesión en ella (la otra sigue abierta).",
      forgotPin: "¿Has olvidado el PIN?", resetTitle: "Restablecer el PIN",
      resetIntro: "Si has olvidado el PIN, o se ha bloqueado por demasiados intentos, puedes poner uno nuevo sin saber el actual.",
      resetNeedsLogin: "Primero vuelves a iniciar sesión con tu proveedor de identidad: solo un inicio de sesión de hace pocos minutos permite restablecer el PIN.",
      resetEndsSessions: "Se cerrarán las demás sesiones de la cartera: los otros dispositivos y navegadores tendrán que volver a iniciar sesión.",
      resetLoginWith: "Volver a iniciar sesión con {0}", resetWho: "Cartera de {0}", resetNewPin: "PIN nuevo",
      pinRules: "De 4 a 12 cifras, solo números.", resetRepeat: "Repite el PIN nuevo", resetSave: "Guardar el PIN nuevo",
      resetDone: "Se ha guardado el PIN nuevo. Se han cerrado las demás sesiones de la cartera.", backToRequest: "Volver a la solicitud",
      resetNetwork: "No hay conexión con el servicio: el PIN no se ha cambiado. Comprueba la conexión y vuelve a probar.",
      err_pin_rules: "El PIN debe tener de 4 a 12 cifras (solo números).", err_pin_mismatch: "Los dos PIN no coinciden: vuelve a escribirlos.",
      err_recent_login_required: "El inicio de sesión ya no es lo bastante reciente para restablecer el PIN (debe ser de hace pocos minutos). Vuelve a iniciar sesión y guarda el PIN nuevo enseguida.",
      err_pin_reset_required: "Hay que restablecer el PIN de la cartera: elige «¿Has olvidado el PIN?».",
      err_credential_unreadable: "Los datos de la credencial elegida no se pueden leer: no se ha enviado nada. Elige otra, si la hay, o rechaza la solicitud.",
      err_conflict: "La solicitud ha cambiado mientras estaba abierta: no se ha enviado nada.",
      conflictOther: "La solicitud ha cambiado mientras estaba abierta: no se ha enviado nada. Se vuelve a mostrar tal como es ahora.",
      conflictAnswered: "Esta solicitud ya se ha respondido, quizá desde otro dispositivo: no se ha enviado nada más.",
      conflictExpired: "Esta solicitud ha caducado mientras estaba abierta: no se ha enviado nada. Pide una nueva al verificador.",
      conflictDeleted: "La credencial elegida ya no está en la cartera: no se ha enviado nada. Elige otra, si la hay, o rechaza la solicitud.",
      conflictChanged: "La credencial elegida compartiría ahora datos distintos de los mostrados: no se ha enviado nada. Rechaza la solicitud y pide una nueva al verificador.",
      requestExpired: "Esta solicitud ha caducado: ya no se puede responder. Pide una nueva al verificador.",
      backToCards: "Volver a mis credenciales",
      reloadRequest: "Volver a cargar la solicitud",
      unreadableOne: "Una credencial de este tipo de la cartera no se puede leer y por eso no se ofrece.",
      unreadableMany: "{0} credenciales de este tipo de la cartera no se pueden leer y por eso no se ofrecen.",
      backupSkippedOne: "1 elemento no se ha podido leer y no está en esta copia.",
      backupSkipped: "{0} elementos no se han podido leer y no están en esta copia.",
      pinLockedEnded: "Demasiados PIN incorrectos: se han cerrado todas las sesiones de la cartera. Vuelve a iniciar sesión; si has olvidado el PIN, restablécelo enseguida desde «Yo».",
      alert_pin_set: "PIN establecido", alert_pin_changed: "PIN cambiado", alert_pin_removed: "PIN eliminado",
      alert_pin_reset: "PIN restablecido", alert_pin_locked: "PIN bloqueado"
    },
    en: {
      evidenceTitle: "Why the issuer consulted the registry", evidenceProcedure: "Procedure",
      evidenceBasis: "Legal basis", basis_consent: "Your consent", basis_law: "A law allows it",
      basis_no_objection: "You did not object", evidenceOfficial: "Official responsible",
      evidenceSource: "Registry consulted", evidenceWhen: "Queried on", evidenceReference: "Query reference",
      checkNow: "Check now", askAction: "Ask an issuer", catalogueTitle: "Ask an issuer for a credential", catalogueIntro: "The issuer will ask you to log in, then the credential comes to your wallet.", request: "Ask for “{0}”", unavailable: "Not available now.", issuanceFailed: "The issuer did not deliver the credential.",
      search: "Search", pinTitle: "PIN", currentPin: "Current PIN", newPin: "New PIN (4 to 12 digits; empty removes it)", savePin: "Save the PIN", pinOn: "Sharing asks for the PIN.", pinOff: "Sharing asks for no PIN.", pinSaved: "PIN saved.", endSession: "End this session", sessionEnded: "Session ended.", asked: "Asked for: {0}",
      skip: "Skip to content", language: "Language", navCards: "Cards", navScan: "Scan", navHistory: "History",
      navAlerts: "Alerts", navSettings: "Me", loginTitle: "Your credentials, on your phone",
      loginIntro: "Log in to see your credentials, receive new ones and share them.",
      loginWith: "Log in with {0}", cardsTitle: "My credentials",
      cardsEmpty: "No credentials yet. Scan an offer QR code to receive one.",
      scanAction: "Scan a QR code", back: "Back", claims: "Claims", delete: "Delete this credential",
      confirmDelete: "Yes, delete it for good", deleted: "Credential deleted.",
      scanTitle: "Scan a QR code", scanIntro: "Point the camera at an offer or a request, or paste the link.",
      cameraStart: "Use the camera", cameraStop: "Stop the camera", photo: "Or read a photo of the code",
      pasteLabel: "Link (openid-credential-offer:// or openid4vp://)", open: "Open",
      noCamera: "The camera cannot be used on this device. Try a photo or paste the link.",
      noCode: "No QR code found.", unknownLink: "This code is neither a credential offer nor a request.",
      offerTitle: "Credential offer", offeredBy: "Offered by", txCode: "Transaction code",
      txHelp: "The issuer gave it to you through another channel.", txDigits: "{0} digits.", accept: "Accept", notNow: "Not now",
      received: "Added to your wallet.", pending: "The issuer will deliver it later; you will get an alert.",
      seeCard: "Show the credential", requestTitle: "Share your data?", whoAsks: "Who asks",
      verified: "verified identity", unverified: "Unverified verifier",
      unverifiedWarning: "Who is making this request could not be confirmed. Do not share real data.",
      purpose: "Purpose", willShare: "From “{0}” ({1}), this will be shared:", optionalShare: "Share this too (optional)",
      chooseCredential: "Which credential?", notShared: "This will not be shared.", cannotShare: "You have no valid credential that answers this request.",
      pin: "Wallet PIN", approve: "Share", decline: "Decline", shared: "Shared with {0}.",
      declined: "You declined the request: nothing was shared.", continueAt: "Continue",
      alreadyAnswered: "This request has already been answered.", historyTitle: "History", alertsTitle: "Alerts",
      markRead: "Mark all as read", noEntries: "Nothing yet.", settingsTitle: "Me", logins: "My logins",
      backup: "Backup", passphrase: "Backup passphrase (at least 10 characters)",
      export: "Export a backup", import: "Import a backup", backupFile: "Backup file",
      exported: "Backup exported.", imported: "Backup imported: {0} credentials added.", logout: "Log out",
      working: "One moment…", status_valid: "Valid", status_suspended: "Suspended", status_revoked: "Revoked",
      status_expired: "Expired", validUntil: "Valid until {0}", issuedBy: "Issued by {0}",
      kind_receipt: "Received", kind_share: "Shared", kind_decline: "Declined", kind_deletion: "Deleted",
      kind_imported: "{0} (imported from a backup)", kind_restore: "Backup restored", restored: "{0} credentials restored",
      importedEntry: "Imported from a backup", entryUnreadable: "This entry cannot be read.",
      credentialUnreadable: "This credential's data cannot be read. Delete it and receive it again.",
      alert_offer_received: "New offer", alert_credential_received: "Credential received",
      alert_issuance_pending: "Issuance pending", alert_expiring: "Expiring soon", alert_suspended: "Credential suspended",
      alert_revoked: "Credential revoked", alert_reinstated: "Credential reinstated", unread: "unread",
      current: "this session", err_invalid_tx_code: "The transaction code is not correct.",
      err_tx_code_required: "The transaction code is needed.", err_untrusted_verifier: "The verifier is not trusted: nothing was sent.",
      err_invalid_request_object: "The request is not valid: nothing was sent.", err_invalid_offer: "The offer is not valid.",
      err_unsatisfiable: "You do not have the credentials asked for.", err_invalid_pin: "The PIN is not correct.", err_pin_required: "Enter your wallet PIN.",
      err_pin_locked: "Too many attempts: try again later, or reset your PIN (“Forgot your PIN?”).", err_invalid_backup: "The passphrase or the file is not correct.",
      err_foreign_backup: "This backup is not from this wallet (or it was changed): nothing was imported.",
      err_invalid_request: "The data is not valid.", err_generic: "That did not work ({0}).", err_network: "The service cannot be reached.",
      loginFailed: "The login did not succeed.",
      tabCopied: "This tab is a copy of another one: log in here too (the other one stays logged in).",
      forgotPin: "Forgot your PIN?", resetTitle: "Reset your PIN",
      resetIntro: "If you forgot your PIN, or it is locked after too many attempts, you can set a new one without knowing the current one.",
      resetNeedsLogin: "First you log in again with your identity provider: only a login of the last few minutes can reset the PIN.",
      resetEndsSessions: "Your wallet's other sessions will be ended: other devices and browsers will have to log in again.",
      resetLoginWith: "Log in again with {0}", resetWho: "Wallet of {0}", resetNewPin: "New PIN",
      pinRules: "4 to 12 digits, numbers only.", resetRepeat: "Repeat the new PIN", resetSave: "Save the new PIN",
      resetDone: "Your new PIN is saved. Your wallet's other sessions were ended.", backToRequest: "Back to the request",
      resetNetwork: "The service cannot be reached: your PIN was not changed. Check the connection and try again.",
      err_pin_rules: "The PIN must have 4 to 12 digits (numbers only).", err_pin_mismatch: "The two PINs do not match: type them again.",
      err_recent_login_required: "Your login is no longer recent enough to reset the PIN (it must be from the last few minutes). Log in again, then save the new PIN right away.",
      err_pin_reset_required: "Your wallet's PIN must be reset: choose “Forgot your PIN?”.",
      err_credential_unreadable: "The chosen credential's data cannot be read: nothing was sent. Choose another one, if there is one, or decline the request.",
      err_conflict: "This request changed while it was open: nothing was sent.",
      conflictOther: "This request changed while it was open: nothing was sent. It is shown again as it is now.",
      conflictAnswered: "This request was already answered, perhaps from another device: nothing more was sent.",
      conflictExpired: "This request expired while it was open: nothing was sent. Ask the verifier for a new one.",
      conflictDeleted: "The chosen credential is no longer in your wallet: nothing was sent. Choose another one, if there is one, or decline the request.",
      conflictChanged: "The chosen credential would now share other data than shown: nothing was sent. Decline, and ask the verifier for a new request.",
      requestExpired: "This request has expired: it can no longer be answered. Ask the verifier for a new one.",
      backToCards: "Back to my credentials",
      reloadRequest: "Load the request again",
      unreadableOne: "1 credential of this type in your wallet cannot be read, so it is not offered.",
      unreadableMany: "{0} credentials of this type in your wallet cannot be read, so they are not offered.",
      backupSkippedOne: "1 item could not be read and is not in this backup.",
      backupSkipped: "{0} items could not be read and are not in this backup.",
      pinLockedEnded: "Too many wrong PINs: every session of your wallet was ended. Log in again; if you forgot your PIN, reset it right after, under “Me”.",
      alert_pin_set: "PIN set", alert_pin_changed: "PIN changed", alert_pin_removed: "PIN removed",
      alert_pin_reset: "PIN reset", alert_pin_locked: "PIN locked"
    }
  };

  var LANGS = ["ca", "es", "en"];
  // The PIN reset in progress in this tab, across the identity provider's redirect: {step: "login" |
  // "ready", back: the screen to return to}. Nothing secret; removed when the reset is done or left.
  var RESET_KEY = "cartera.pinReset";
  var $ = function (id) { return document.getElementById(id); };
  var lang = pickLanguage();
  var me = null;
  var alertStream = null;

  function pickLanguage() {
    var saved = localStorage.getItem("cartera.lang");
    if (LANGS.indexOf(saved) >= 0) { return saved; }
    var wanted = navigator.languages || [navigator.language || ""];
    for (var i = 0; i < wanted.length; i++) {
      var code = String(wanted[i]).slice(0, 2).toLowerCase();
      if (LANGS.indexOf(code) >= 0) { return code; }
    }
    return "ca";
  }

  function t(key) {
    // One pass with a function: an argument is inserted as it is (a "$'" or a "{1}" in an issuer's
    // name is text, never a replacement pattern or another placeholder).
    var args = arguments;
    var text = T[lang][key] || T.en[key] || key;
    return text.replace(/\{(\d+)\}/g, function (whole, index) {
      var value = args[Number(index) + 1];
      return value === undefined ? whole : String(value);
    });
  }

  function translatePage() {
    document.documentElement.lang = lang;
    $("lang").value = lang;
    document.querySelectorAll("[data-i18n]").forEach(function (el) { el.textContent = t(el.dataset.i18n); });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  // Screens re-render when an alert arrives while they are loading: only the newest answer may draw,
  // and it clears the screen when it arrives (not when it was asked), so nothing shows twice.
  var renders = {};
  function ticket(name) { renders[name] = (renders[name] || 0) + 1; return renders[name]; }
  function current(name, n) { return renders[name] === n; }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }

  function fmtDate(value) {
    if (!value) { return ""; }
    var date = new Date(value);
    return isNaN(date) ? String(value) : new Intl.DateTimeFormat(lang, { dateStyle: "medium" }).format(date);
  }

  function fmtTime(value) {
    var date = new Date(value);
    return isNaN(date) ? String(value) : new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(date);
  }

  function fmtValue(value) {
    if (value === null || value === undefined) { return "—"; }
    if (typeof value === "boolean") { return value ? "✓" : "✗"; }
    if (typeof value === "object") { return JSON.stringify(value); }
    return String(value);
  }

  function valueDd(value) {
    // Structured values (an address, a municipality) as a nested list, never as raw JSON.
    if (value && typeof value === "object" && !Array.isArray(value)) {
      var inner = el("dl", { "class": "claims nested" });
      Object.keys(value).forEach(function (key) {
        inner.appendChild(el("dt", { text: key }));
        inner.appendChild(valueDd(value[key]));
      });
      return el("dd", {}, [inner]);
    }
    if (Array.isArray(value) && value.some(function (v) { return v && typeof v === "object"; })) {
      var list = el("ul", { "class": "values" });
      value.forEach(function (v) {
        list.appendChild(el("li", {}, [el("dl", { "class": "claims nested" }, [el("dt", { text: "·" }), valueDd(v)])]));
      });
      return el("dd", {}, [list]);
    }
    return el("dd", { text: Array.isArray(value) ? value.map(fmtValue).join(", ") : fmtValue(value) });
  }

  function setStatus(text) { $("status").textContent = text || ""; }

  function showError(text) {
    var box = $("error");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function errorText(err) {
    if (!err || !err.error) { return t("err_network"); }
    var key = "err_" + err.error;
    return T[lang][key] ? t(key) : t("err_generic", err.error);
  }

  // -- tokens and the API ----------------------------------------------------------------------

  function tokens() {
    try { return JSON.parse(sessionStorage.getItem("cartera.tokens") || "null"); } catch (e) { return null; }
  }

  function saveTokens(body) {
    sessionStorage.setItem("cartera.tokens", JSON.stringify({ access: body.access_token, refresh: body.refresh_token }));
  }

  function dropTokens() {
    sessionStorage.removeItem("cartera.tokens");
    sessionStorage.removeItem(RESET_KEY);
    me = null;
    if (alertStream) { alertStream.abort(); alertStream = null; }
    forgetScreens();
  }

  function forgetScreens() {
    // Logged out: no screen keeps the citizen's data in the page (the Back button shows hidden views'
    // content again), and an answer still on its way draws nothing (its ticket is no longer current).
    Object.keys(renders).forEach(function (name) { renders[name] += 1; });
    ["cards", "card-title", "card-meta", "card-status", "card-claims", "card-evidence-list", "offer-issuer",
     "offer-credentials", "offer-result", "verifier-name", "verifier-warning", "request-purpose", "request-queries",
     "request-result", "history", "alerts", "alert-count", "me", "logins", "pin-state", "reset-who", "reset-result"
    ].forEach(function (id) { clear($(id)); });
    ["offer-result", "request-result", "verifier-warning", "alert-count", "pin-box", "export-pin-box",
     "current-pin-box", "reset-result", "card-evidence"].forEach(function (id) { $(id).hidden = true; });
    ["tx-code", "pin", "history-q", "current-pin", "new-pin", "export-pass", "export-pin", "import-pass", "link",
     "import-file", "reset-pin", "reset-pin-again"].forEach(function (id) { $(id).value = ""; });
    delete $("card-delete").dataset.id;
    delete $("offer-form").dataset.id;
    delete $("view-request").dataset.id;
    $("approve").disabled = true;
    $("decline").disabled = true;
  }

  // A tab duplicated from this one starts with a copy of its sessionStorage, refresh token included,
  // and whichever of the two refreshed second would end the session for both (a refresh token used
  // twice is taken for a stolen one). Each tab keeps an id in sessionStorage and, on a BroadcastChannel,
  // says so to a tab that asks whether its id is taken: a tab whose id is taken is the copy, and forgets
  // the tokens it was handed (its citizen logs in there; the original tab goes on). A reloaded tab finds
  // nobody with its id and keeps its tokens. No refresh leaves before the question is settled. Two tabs
  // asking about the same id at once (a browser restoring a tab and its duplicate) each hear the
  // other's question: the one with the smaller random draw is the copy, the other tells it so.
  var TAB_ANSWER_MS = 300;
  var tabSettled = (function () {
    var channel = "BroadcastChannel" in window ? new BroadcastChannel("cartera.tabs") : null;
    var inherited = sessionStorage.getItem("cartera.tab");
    var draw = randomState();
    var mine = null;  // answered for only once settled, or two copies would each call the other a copy
    var taken = null;  // while asking: what to do when another tab answers that the id is its own
    function settle(id) { mine = id; sessionStorage.setItem("cartera.tab", id); }
    if (channel) {
      channel.onmessage = function (event) {
        var data = event.data || {};
        if (mine && data.ask === mine) { channel.postMessage({ taken: mine }); }
        if (!mine && taken && data.taken === inherited) { taken(); }
        if (!mine && taken && data.ask === inherited && typeof data.draw === "string" && data.draw !== draw) {
          if (data.draw > draw) { taken(); } else { channel.postMessage({ taken: inherited }); }
        }
      };
    }
    if (!channel || !inherited) { settle(inherited || randomState()); return Promise.resolve(); }
    return new Promise(function (resolve) {
      var timer = setTimeout(function () { settle(inherited); resolve(); }, TAB_ANSWER_MS);
      taken = function () {
        clearTimeout(timer);
        settle(randomState());
        if (tokens()) {
          dropTokens();
          flashError = t("tabCopied");
          route(null);
        }
        resolve();
      };
      channel.postMessage({ ask: inherited, draw: draw });
    });
  })();

  // One refresh at a time: a refresh token is good for one use, and the server takes a second use of
  // it for a stolen token's and ends the session. Calls that meet a 401 together share one refresh.
  var refreshing = null;

  function refresh() {
    if (refreshing) { return refreshing; }
    refreshing = tabSettled.then(function () {
      var current = tokens();
      if (!current || !current.refresh) { return false; }
      return fetch("/v1/auth/token", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ grant_type: "refresh_token", refresh_token: current.refresh })
      }).then(function (r) {
        if (!r.ok) { return false; }
        return r.json().then(function (body) { saveTokens(body); return true; });
      });
    }).catch(function () { return false; }).then(function (ok) { refreshing = null; return ok; });
    return refreshing;
  }

  function api(method, path, body, retried) {
    var current = tokens();
    var headers = { "Accept-Language": lang };
    if (current) { headers.Authorization = "Bearer " + current.access; }
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    return fetch(path, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body) })
      .catch(function () { throw { error: null }; })
      .then(function (r) {
        // The answer to a call made in a session that has ended meanwhile (a lockout that ended every
        // session, a logout): its screen is gone, and its message would overwrite the login screen's.
        if (current && !tokens()) { return new Promise(function () {}); }
        if (r.status === 401 && !retried) {
          var now = tokens();
          // Refreshed by another call since this one left: retry with the new token, no new refresh.
          var renewed = current && now && now.access !== current.access ? Promise.resolve(true) : refresh();
          return renewed.then(function (ok) {
            if (ok) { return api(method, path, body, true); }
            dropTokens();
            go("login");
            throw { error: "unauthorized" };
          });
        }
        if (r.status === 204) { return null; }
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (!r.ok) {
            throw { status: r.status, error: data.error || String(r.status), description: data.error_description,
                    sessionsEnded: data.sessions_ended === true };
          }
          return data;
        });
      });
  }

  // -- login ---------------------------------------------------------------------------------------

  function redirectUri() { return location.origin + "/app/callback"; }

  function randomState() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function base64url(bytes) {
    var text = "";
    for (var i = 0; i < bytes.length; i++) { text += String.fromCharCode(bytes[i]); }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // PKCE (RFC 7636) towards the wallet API: a fresh verifier per login, kept in this tab across the
  // redirect; only its S256 challenge goes in the login URL. Another app that took the redirect has
  // the code but not the verifier, and the API redeems the code only with it.
  function pkceVerifier() {
    var bytes = new Uint8Array(32);
    crypto.getRandomValues(bytes);
    return base64url(bytes);
  }

  function s256(verifier) {
    return crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)).then(function (digest) {
      return base64url(new Uint8Array(digest));
    });
  }

  function startLogin(provider) {
    var state = randomState();
    var verifier = pkceVerifier();
    sessionStorage.setItem("cartera.loginState", state);
    sessionStorage.setItem("cartera.loginVerifier", verifier);
    Promise.resolve().then(function () { return s256(verifier); }).then(function (challenge) {
      location.assign("/v1/auth/login?" + new URLSearchParams({
        provider: provider.name, redirect_uri: redirectUri(), state: state,
        code_challenge: challenge, code_challenge_method: "S256" }).toString());
    }).catch(function () { showError(t("loginFailed")); });
  }

  function providerButtons(name, box, label, before) {
    // One button per identity provider. Rendered again when the language changes: only the latest
    // answer fills the box, once.
    var n = ticket(name);
    return fetch("/v1/auth/providers").then(function (r) { return r.json(); }).then(function (list) {
      if (!current(name, n)) { return; }
      clear(box);
      list.forEach(function (provider) {
        var button = el("button", { type: "button", "class": "primary", text: t(label, provider.label) });
        button.addEventListener("click", function () { if (before) { before(); } startLogin(provider); });
        box.appendChild(button);
      });
    }).catch(function () { showError(t("err_network")); });
  }

  function renderLogin() {
    providerButtons("providers", $("providers"), "loginWith");
  }

  function finishLogin() {
    var params = new URLSearchParams(location.search);
    var expected = sessionStorage.getItem("cartera.loginState");
    var verifier = sessionStorage.getItem("cartera.loginVerifier");
    sessionStorage.removeItem("cartera.loginState");
    sessionStorage.removeItem("cartera.loginVerifier");
    // A login started from the "reset your PIN" screen returns there, whatever its outcome.
    var reset = resetState();
    var forReset = reset !== null && reset.step === "login";
    history.replaceState(null, "", forReset ? "/app/#/pin-reset" : "/app/");
    // A redirect this tab did not start (another state, or none kept) is dropped: login CSRF.
    if (params.get("error") || !params.get("code") || !expected || params.get("state") !== expected || !verifier) {
      flashError = t("loginFailed");
      return Promise.resolve();
    }
    return fetch("/v1/auth/token", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
                             code_verifier: verifier })
    }).then(function (r) {
      if (!r.ok) { throw new Error("token"); }
      return r.json();
    }).then(function (body) {
      var previous = tokens();
      saveTokens(body);
      // Logged in again over a session of this tab (the fresh login a PIN reset needs): that older
      // session is ended rather than left behind (best effort; the reset ends it anyway).
      if (previous && previous.access) {
        fetch("/v1/auth/logout", { method: "POST", headers: { Authorization: "Bearer " + previous.access } })
          .catch(function () {});
      }
      if (forReset) { setResetState("ready", reset.back); } else { location.hash = "#/cards"; }
    }).catch(function () { flashError = t("loginFailed"); });
  }

  // -- routing -------------------------------------------------------------------------------------

  var VIEWS = ["login", "cards", "card", "catalogue", "scan", "offer", "request", "history", "alerts", "settings",
               "pin-reset"];

  function go(name, id) { location.hash = "#/" + name + (id ? "/" + encodeURIComponent(id) : ""); }

  var flash = "";
  var flashError = "";

  function route(event) {
    var parts = location.hash.replace(/^#\/?/, "").split("/");
    var name = VIEWS.indexOf(parts[0]) >= 0 ? parts[0] : "cards";
    var id = parts[1] ? decodeURIComponent(parts[1]) : null;
    if (!tokens()) { name = "login"; }
    if (name === "login" && tokens()) { name = "cards"; }
    stopCamera();
    if (name !== "pin-reset") { leavePinReset(); }
    showError(flashError);
    flashError = "";
    setStatus(flash);
    flash = "";
    VIEWS.forEach(function (view) { $("view-" + view).hidden = view !== name; });
    $("nav").hidden = name === "login";
    document.querySelectorAll("#nav a").forEach(function (link) {
      if (link.dataset.route === name || ((name === "card" || name === "catalogue") && link.dataset.route === "cards") ||
          (name === "pin-reset" && link.dataset.route === "settings")) {
        link.setAttribute("aria-current", "page");
      } else { link.removeAttribute("aria-current"); }
    });
    var heading = $("view-" + name).querySelector("h2");
    // Moving between screens puts the focus on the new screen's heading (screen readers announce it);
    // on the first load the focus stays at the top, where the skip link is.
    if (heading && event) { heading.setAttribute("tabindex", "-1"); heading.focus({ preventScroll: true }); }
    if (name !== "login") { startAlerts(); }
    var render = { login: renderLogin, cards: renderCards, card: renderCard, catalogue: renderCatalogue,
                   scan: function () {}, offer: renderOffer,
                   request: renderRequest, history: renderHistory, alerts: renderAlerts, settings: renderSettings,
                   "pin-reset": renderPinReset }[name];
    render(id);
  }

  // -- credentials ---------------------------------------------------------------------------------

  function badge(status) {
    return el("span", { "class": "badge " + status, text: t("status_" + status) });
  }

  function cardItem(cred, link) {
    var stripe = cred.display && cred.display.background_color ? cred.display.background_color : "#0b4f8a";
    if (cred.unreadable) { return unreadableCard(cred); }
    var title = link ? el("a", { href: "#/card/" + encodeURIComponent(cred.id), text: cred.name })
                     : el("span", { text: cred.name });
    var item = el("li", { "class": "card", "data-id": cred.id || "" }, [
      el("h3", {}, [title]),
      cred.issuer_name ? el("p", { "class": "meta", text: t("issuedBy", cred.issuer_name) }) : null,
      cred.expires_at ? el("p", { "class": "meta", text: t("validUntil", fmtDate(cred.expires_at)) }) : null,
      cred.status ? badge(cred.status) : null
    ]);
    // The issuer's colour marks the card's edge only: text keeps our own colours, so contrast holds.
    item.style.borderLeftColor = /^#[0-9a-fA-F]{3,8}$/.test(stripe) ? stripe : "#0b4f8a";
    return item;
  }

  // A credential whose stored data does not open: the API lists what it holds in clear (type, issuer,
  // times, status), and the detail screen could only show an error. Said as it is, with the one thing
  // the citizen can do about it here: delete it (then receive it again, or restore a backup).
  function unreadableCard(cred) {
    var remove = el("button", { type: "button", "class": "danger", "data-id": cred.id, text: t("delete") });
    remove.addEventListener("click", function () {
      // Two steps, as on the detail screen.
      if (!remove.dataset.armed) { remove.dataset.armed = "1"; remove.textContent = t("confirmDelete"); return; }
      api("DELETE", "/v1/credentials/" + encodeURIComponent(cred.id)).then(function () {
        flash = t("deleted");
        route();  // already on the list: no hashchange would redraw it
      }).catch(function (err) { showError(errorText(err)); });
    });
    return el("li", { "class": "card unreadable", "data-id": cred.id || "" }, [
      el("h3", {}, [el("span", { text: cred.name })]),
      cred.issuer_name ? el("p", { "class": "meta", text: t("issuedBy", cred.issuer_name) }) : null,
      el("p", { "class": "meta unreadable-note", text: t("credentialUnreadable") }),
      remove
    ]);
  }

  function renderCards() {
    var n = ticket("cards");
    api("GET", "/v1/credentials").then(function (items) {
      if (!current("cards", n)) { return; }
      var list = clear($("cards"));
      $("cards-empty").hidden = items.length > 0;
      items.forEach(function (cred) { list.appendChild(cardItem(cred, true)); });
    }).catch(function (err) { showError(errorText(err)); });
  }

  function claimList(target, claims, labels, prefix) {
    Object.keys(claims).forEach(function (name) {
      var path = prefix.concat([name]);
      var label = labels[JSON.stringify(path)] || name;
      var value = claims[name];
      target.appendChild(el("dt", { text: label }));
      if (value && typeof value === "object" && !Array.isArray(value)) {
        var inner = el("dl", { "class": "claims nested" });
        claimList(inner, value, labels, path);
        target.appendChild(el("dd", {}, [inner]));
      } else {
        target.appendChild(el("dd", { text: Array.isArray(value) ? value.map(fmtValue).join(", ") : fmtValue(value) }));
      }
    });
  }

  function renderCard(id) {
    var n = ticket("card");
    var remove = $("card-delete");
    remove.textContent = t("delete");
    remove.dataset.armed = "";
    api("GET", "/v1/credentials/" + encodeURIComponent(id)).then(function (cred) {
      if (!current("card", n)) { return; }
      var claims = clear($("card-claims"));
      $("card-title").textContent = cred.name;
      $("card-meta").textContent = [t("issuedBy", cred.issuer_name),
        cred.expires_at ? t("validUntil", fmtDate(cred.expires_at)) : ""].filter(Boolean).join(" · ");
      var status = $("card-status");
      status.className = "badge " + cred.status;
      status.textContent = t("status_" + cred.status);
      var labels = {};
      (cred.claim_labels || []).forEach(function (l) { labels[JSON.stringify(l.path)] = l.name; });
      claimList(claims, cred.claims, labels, []);
      showEvidence(cred.query_evidence);
      remove.dataset.id = cred.id;
    }).catch(function (err) { showError(errorText(err)); });
  }

  // Why the issuer queried the registry the credential's data came from, as the issuer said it (the
  // API has checked it: strings only, known members). Hidden when the issuer said nothing.
  function showEvidence(evidence) {
    var box = $("card-evidence");
    var list = clear($("card-evidence-list"));
    box.hidden = !evidence;
    if (!evidence) { return; }
    var source = evidence.source || {};
    var rows = [
      ["purpose", evidence.purpose],
      ["evidenceProcedure", evidence.procedure],
      ["evidenceBasis", evidence.legal_basis ? t("basis_" + evidence.legal_basis) : null],
      ["evidenceOfficial", evidence.official ? evidence.official.name : null],
      ["evidenceSource", [source.product, source.name].filter(Boolean).join(" · ")],
      ["evidenceWhen", evidence.queried_at ? fmtTime(evidence.queried_at) : null],
      ["evidenceReference", evidence.request_id]
    ];
    rows.forEach(function (row) {
      if (!row[1]) { return; }
      list.appendChild(el("dt", { text: t(row[0]) }));
      list.appendChild(el("dd", { "data-evidence": row[0], text: row[1] }));
    });
  }

  function deleteCard() {
    var remove = $("card-delete");
    // Two steps instead of a browser confirm() dialog: keyboard and screen-reader friendly.
    if (!remove.dataset.armed) {
      remove.dataset.armed = "1";
      remove.textContent = t("confirmDelete");
      return;
    }
    api("DELETE", "/v1/credentials/" + encodeURIComponent(remove.dataset.id)).then(function () {
      flash = t("deleted");
      go("cards");
    }).catch(function (err) { showError(errorText(err)); });
  }

  // -- wallet-initiated issuance ----------------------------------------------------------------------

  function renderCatalogue() {
    var n = ticket("catalogue");
    api("GET", "/v1/catalogue").then(function (issuers) {
      if (!current("catalogue", n)) { return; }
      var list = clear($("catalogue"));
      if (!issuers.length) { list.appendChild(el("li", { text: t("noEntries") })); }
      issuers.forEach(function (entry) {
        var item = el("li", { "class": "entry" }, [el("h3", { text: entry.issuer.name || entry.issuer.id })]);
        if (!entry.available) { item.appendChild(el("p", { "class": "meta", text: t("unavailable") })); }
        entry.credentials.forEach(function (cred) {
          var ask = el("button", { type: "button", text: t("request", cred.name) });
          ask.addEventListener("click", function () { askIssuer(entry.issuer.id, cred.configuration_id, ask); });
          item.appendChild(el("p", {}, [ask]));
        });
        list.appendChild(item);
      });
    }).catch(function (err) { showError(errorText(err)); });
  }

  function askIssuer(issuer, configurationId, button) {
    button.disabled = true;
    setStatus(t("working"));
    // The issuer logs the citizen in; the wallet API keeps the issuer's code and sends the browser back
    // to /app/?offer_id=...&completion=... (or error=...), where returnFromIssuer completes it.
    api("POST", "/v1/issuance/authorize", { credential_issuer: issuer, credential_configuration_id: configurationId,
                                             redirect_uri: location.origin + "/app/" })
      .then(function (started) {
        if (!/^https?:\/\//.test(started.authorization_url)) { throw { error: "invalid_issuer_metadata" }; }
        sessionStorage.setItem("cartera.issuance", started.offer_id);
        location.assign(started.authorization_url);
      })
      .catch(function (err) { button.disabled = false; setStatus(""); showError(errorText(err)); });
  }

  function returnFromIssuer() {
    // Completed only for the issuance this tab started, logged in as the wallet that started it (the
    // API checks that too): an issuer's authorization link someone else sent must not end in their
    // wallet with a credential of the citizen who followed it, nor in this wallet unasked.
    // The address is replaced, not assigned (no hashchange: the route that follows shows the flash).
    var params = new URLSearchParams(location.search);
    if (!params.has("offer_id") && !params.has("error")) { return Promise.resolve(); }
    var expected = sessionStorage.getItem("cartera.issuance");
    sessionStorage.removeItem("cartera.issuance");
    var id = params.get("offer_id");
    var offerScreen = "/app/#/offer/" + encodeURIComponent(id || "");
    if (!id || id !== expected || !tokens()) {
      history.replaceState(null, "", "/app/#/cards");
      flashError = t("issuanceFailed");
      return Promise.resolve();
    }
    history.replaceState(null, "", offerScreen);
    if (params.get("error") || !params.get("completion")) { return Promise.resolve(); }  // shows the failure
    setStatus(t("working"));
    return api("POST", "/v1/issuance/complete", { offer_id: id, completion: params.get("completion") })
      .catch(function (err) { flashError = errorText(err); });
  }

  // -- scanning ------------------------------------------------------------------------------------

  var camera = { stream: null, timer: null, detector: null };

  function decodePixels(source, width, height) {
    var canvas = document.createElement("canvas");
    var scale = Math.min(1, 1024 / Math.max(width, height));
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    var context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(source, 0, 0, canvas.width, canvas.height);
    var image = context.getImageData(0, 0, canvas.width, canvas.height);
    var found = window.jsQR ? window.jsQR(image.data, image.width, image.height, { inversionAttempts: "attemptBoth" }) : null;
    return found ? found.data : null;
  }

  function detect(source, width, height) {
    // The browser's own detector when it has one; the vendored jsQR otherwise (or when it finds nothing).
    if (camera.detector) {
      return camera.detector.detect(source).then(function (codes) {
        return codes.length ? codes[0].rawValue : decodePixels(source, width, height);
      }).catch(function () { return decodePixels(source, width, height); });
    }
    return Promise.resolve(decodePixels(source, width, height));
  }

  function startCamera() {
    showError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { showError(t("noCamera")); return; }
    if ("BarcodeDetector" in window) {
      try { camera.detector = new window.BarcodeDetector({ formats: ["qr_code"] }); } catch (e) { camera.detector = null; }
    }
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false }).then(function (stream) {
      camera.stream = stream;
      var video = $("camera");
      video.srcObject = stream;
      video.hidden = false;
      $("camera-start").hidden = true;
      $("camera-stop").hidden = false;
      return video.play().then(function () {
        var busy = false;
        camera.timer = setInterval(function () {
          if (busy || !video.videoWidth) { return; }
          busy = true;
          detect(video, video.videoWidth, video.videoHeight).then(function (text) {
            busy = false;
            if (text && camera.stream) { stopCamera(); scanned(text); }
          });
        }, 250);
      });
    }).catch(function () { stopCamera(); showError(t("noCamera")); });
  }

  function stopCamera() {
    if (camera.timer) { clearInterval(camera.timer); camera.timer = null; }
    if (camera.stream) { camera.stream.getTracks().forEach(function (track) { track.stop(); }); camera.stream = null; }
    var video = $("camera");
    video.srcObject = null;
    video.hidden = true;
    $("camera-start").hidden = false;
    $("camera-stop").hidden = true;
  }

  function readPhoto(file) {
    if (!file) { return; }
    createImageBitmap(file).then(function (bitmap) {
      return detect(bitmap, bitmap.width, bitmap.height);
    }).then(function (text) {
      if (text) { scanned(text); } else { showError(t("noCode")); }
    }).catch(function () { showError(t("noCode")); });
  }

  function scanned(text) {
    // What the camera, a photo or the paste box found: an OpenID4VCI offer or an OpenID4VP request.
    var value = String(text).trim();
    var lower = value.toLowerCase();
    showError("");
    setStatus(t("working"));
    if (lower.indexOf("openid-credential-offer://") === 0 || lower.indexOf("haip-vci://") === 0) {
      return api("POST", "/v1/offers", { offer_uri: value }).then(function (preview) {
        setStatus("");
        go("offer", preview.offer_id);
      }).catch(function (err) { setStatus(""); showError(errorText(err)); });
    }
    if (lower.indexOf("openid4vp://") === 0 || lower.indexOf("haip-vp://") === 0 || lower.indexOf("eudi-openid4vp://") === 0) {
      return api("POST", "/v1/presentations", { request_uri: value }).then(function (preview) {
        setStatus("");
        go("request", preview.presentation_id);
      }).catch(function (err) { setStatus(""); showError(errorText(err)); });
    }
    setStatus("");
    showError(t("unknownLink"));
    return Promise.resolve();
  }

  // -- offers --------------------------------------------------------------------------------------

  function renderOffer(id) {
    var n = ticket("offer");
    var form = $("offer-form");
    if (form.dataset.id !== id) {
      // Another offer: nothing of the previous one stays on screen while this one loads. (The same
      // offer re-rendered after an alert keeps its screen until the answer arrives: no flicker.)
      clear($("offer-result")).hidden = true;
      clear($("offer-credentials"));
      $("offer-issuer").textContent = "";
      form.hidden = true;
      $("tx-code").value = "";
      form.dataset.id = id;
    }
    api("GET", "/v1/offers/" + encodeURIComponent(id)).then(function (offer) {
      if (!current("offer", n)) { return; }
      if (offer.state === "offered") {
        clear($("offer-result")).hidden = true;
        form.hidden = false;
      }
      var list = clear($("offer-credentials"));
      $("offer-issuer").textContent = offer.issuer.name || offer.issuer.id;
      offer.credentials.forEach(function (cred) {
        var item = cardItem({ name: cred.name, display: { background_color: cred.background_color } }, false);
        if (cred.description) { item.appendChild(el("p", { "class": "meta", text: cred.description })); }
        var names = cred.claims.map(function (c) { return c.name; }).join(", ");
        if (names) { item.appendChild(el("p", { "class": "meta", text: t("claims") + ": " + names })); }
        list.appendChild(item);
      });
      $("tx-box").hidden = !offer.tx_code_required;
      $("tx-code").required = offer.tx_code_required;
      var described = offer.tx_code && offer.tx_code.description ? String(offer.tx_code.description).trim() : t("txHelp");
      var help = [/[.!?:]$/.test(described) ? described : described + "."];
      if (offer.tx_code && offer.tx_code.length) { help.push(t("txDigits", offer.tx_code.length)); }
      $("tx-help").textContent = help.join(" ");
      if (offer.tx_code && offer.tx_code.input_mode === "text") { $("tx-code").setAttribute("inputmode", "text"); }
      if (offer.state !== "offered") { offerDone(offer); }
    }).catch(function (err) { showError(errorText(err)); });
  }

  function offerDone(offer) {
    var result = clear($("offer-result"));
    $("offer-form").hidden = true;
    result.hidden = false;
    if (offer.state === "issued") {
      result.appendChild(el("p", { "class": "success", text: t("received") }));
      offer.credential_ids.forEach(function (cid) {
        result.appendChild(el("p", {}, [el("a", { "class": "button primary", href: "#/card/" + encodeURIComponent(cid), text: t("seeCard") })]));
      });
    } else if (offer.state === "pending") {
      result.appendChild(el("p", { text: t("pending") }));
      var check = el("button", { type: "button", id: "offer-poll", text: t("checkNow") });
      check.addEventListener("click", function () {
        check.disabled = true;
        api("POST", "/v1/offers/" + encodeURIComponent(offer.offer_id) + "/poll").then(offerDone)
          .catch(function (err) { check.disabled = false; showError(errorText(err)); });
      });
      result.appendChild(check);
    } else if (offer.error) {
      result.appendChild(el("p", { "class": "error-text", text: errorText(offer.error) }));
    }
  }

  function acceptOffer(event) {
    event.preventDefault();
    var form = $("offer-form");
    var button = $("offer-accept");
    var code = $("tx-code").value.trim();
    button.disabled = true;
    showError("");
    setStatus(t("working"));
    api("POST", "/v1/offers/" + encodeURIComponent(form.dataset.id) + "/accept", { tx_code: code || null })
      .then(function (offer) { setStatus(""); offerDone(offer); })
      .catch(function (err) {
        setStatus("");
        showError(errorText(err));
        $("tx-code").value = "";
        $("tx-code").focus();
      })
      .then(function () { button.disabled = false; });
  }

  // -- presentation requests (consent) -------------------------------------------------------------

  // ``after(request)``: called once the request is on screen (a 409 explained against what it is now);
  // should it not load, the screen offers to load it again, or to go back.
  function renderRequest(id, after) {
    var n = ticket("request");
    var view = $("view-request");
    // Nothing can be answered before this request is on screen: Decline would refuse a request the
    // citizen has not seen, Share send one they have not read.
    $("approve").disabled = true;
    $("decline").disabled = true;
    if (view.dataset.id !== id) {
      // Another request: nothing of the previous one stays on screen while this one loads.
      clear($("request-result")).hidden = true;
      clear($("request-queries"));
      clear($("verifier-name")).className = "";
      clear($("verifier-warning")).hidden = true;
      clear($("request-purpose"));
      $("pin-box").hidden = true;
      $("pin").value = "";
      view.dataset.id = id;
    }
    // Whether a PIN is needed is asked each time: it may have been set from another device since.
    // The API offers a pending request's credentials as they are now: none that stopped opening or
    // was deleted since the scan (each query counts those of its type that cannot be read).
    Promise.all([api("GET", "/v1/presentations/" + encodeURIComponent(id)), api("GET", "/v1/me")])
      .then(function (all) {
        if (!current("request", n)) { return; }
        clear($("request-result")).hidden = true;
        var box = clear($("request-queries"));
        var request = all[0];
        me = all[1];
        var verifier = request.verifier;
        var name = $("verifier-name");
        var warning = $("verifier-warning");
        if (verifier.verified && verifier.name) {
          name.textContent = verifier.name + " (" + t("verified") + ")";
          name.className = "trusted";
          warning.hidden = true;
        } else {
          name.textContent = t("unverified");
          name.className = "untrusted";
          warning.textContent = t("unverifiedWarning") + " (" + verifier.client_id + ")";
          warning.hidden = false;
        }
        $("request-purpose").textContent = request.purpose || "—";
        request.queries.forEach(function (query) { box.appendChild(queryBlock(query, request.satisfiable)); });
        var explained = request.queries.some(function (q) { return !q.satisfied; });
        if (!request.satisfiable && !explained) { box.appendChild(el("p", { "class": "warning", text: t("cannotShare") })); }
        $("pin-box").hidden = !me.pin_set;
        // Past its expiry a pending request can be neither shared nor declined (the API answers 409).
        var open = request.state === "pending" && !request.expired;
        $("approve").disabled = !request.satisfiable || !open;
        $("decline").disabled = !open;
        if (request.state !== "pending") { requestDone(request); } else if (request.expired) { requestExpired(); }
        if (after) { after(request); }
      }).catch(function (err) {
        if (!current("request", n)) { return; }
        showError(errorText(err));
        if (after) { wayOut(id, after); }
      });
  }

  // What the citizen can still do when the request cannot be shown as it is now: load it again (and
  // then be told what ``after`` says), or go back.
  function wayOut(id, after) {
    var result = clear($("request-result"));
    result.hidden = false;
    var reload = el("button", { type: "button", id: "request-reload", text: t("reloadRequest") });
    reload.addEventListener("click", function () { showError(""); renderRequest(id, after); });
    result.appendChild(el("p", { "class": "actions" }, [reload]));
    result.appendChild(backLink());
  }

  function backLink() {
    return el("p", {}, [el("a", { "class": "button", id: "request-back", href: "#/cards", text: t("backToCards") })]);
  }

  function requestExpired() {
    $("pin").value = "";
    var result = clear($("request-result"));
    result.hidden = false;
    result.appendChild(el("p", { "class": "warning", text: t("requestExpired") }));
    result.appendChild(backLink());
  }

  // A 409 conflict of Share or Decline: nothing was sent. The request is read again and the message
  // says what changed: answered meanwhile (from another session) or expired — only going back is left;
  // a chosen credential deleted — shown again without it, to choose another or decline; a chosen
  // credential that would now disclose other claims than shown — only Decline is left.
  function explainConflict(request, chosen) {
    if (request.state !== "pending") {
      showError(t("conflictAnswered"));
      $("request-result").appendChild(backLink());
      return;
    }
    if (request.expired) { showError(t("conflictExpired")); return; }
    var gone = false;
    var still = false;
    request.queries.forEach(function (query) {
      var wanted = chosen && chosen[query.query_id];
      if (!wanted) { return; }
      if (query.options.some(function (o) { return o.credential_id === wanted; })) { still = true; } else { gone = true; }
    });
    if (gone) { showError(t("conflictDeleted")); return; }
    if (still) {
      showError(t("conflictChanged"));
      $("approve").disabled = true;
      return;
    }
    showError(t("conflictOther"));
  }

  function queryBlock(query, satisfiable) {
    // "Will be shared" is said of exactly what the approval sends (the API's `shared`): an alternative
    // of a credential set that another option answers is shown as not shared, and when nothing
    // answers it, that is no problem while another option is answered.
    var block = el("fieldset", { "class": "query", "data-query": query.query_id });
    // Credentials of the type asked for that cannot be read are not offered: said, by number only.
    var unreadable = query.unreadable_count > 0 ? el("p", { "class": "meta unreadable-note", text:
      query.unreadable_count === 1 ? t("unreadableOne") : t("unreadableMany", query.unreadable_count) }) : null;
    if (!query.shared) {
      block.className = "query not-shared";
      block.appendChild(el("legend", { text: query.satisfied ? query.options[0].credential_name : t("asked", query.query_id) }));
      var blocking = !satisfiable && !query.satisfied;
      block.appendChild(el("p", { "class": blocking ? "warning" : "meta", text: blocking ? t("cannotShare") : t("notShared") }));
      if (unreadable) { block.appendChild(unreadable); }
      return block;
    }
    block.appendChild(el("legend", { text: query.options[0].credential_name }));
    if (unreadable) { block.appendChild(unreadable); }
    if (query.optional) {
      var toggleId = "opt-" + query.query_id;
      var toggle = el("input", { type: "checkbox", id: toggleId, "class": "optional", "data-query": query.query_id });
      block.appendChild(el("p", { "class": "toggle" }, [toggle, el("label", { "for": toggleId, text: t("optionalShare") })]));
    }
    var chooser = query.options.length > 1;
    if (chooser) {
      block.appendChild(el("p", { "class": "meta", text: t("chooseCredential") }));
    } else {
      // The one option shown is sent by name: the kept preview's first may be one left out above.
      block.dataset.credential = query.options[0].credential_id;
    }
    query.options.forEach(function (option, index) {
      var part = el("div", { "class": "option" });
      var heading = t("willShare", option.credential_name, option.issuer_name);
      if (chooser) {
        var radioId = "q-" + query.query_id + "-" + index;
        var radio = el("input", { type: "radio", name: "q-" + query.query_id, id: radioId, value: option.credential_id,
                                  "data-query": query.query_id });
        radio.checked = index === 0;
        part.appendChild(el("p", {}, [radio, el("label", { "for": radioId, text: heading })]));
      } else {
        part.appendChild(el("p", { text: heading }));
      }
      var claims = el("dl", { "class": "claims" });
      option.claims.forEach(function (claim) {
        claims.appendChild(el("dt", { text: claim.name }));
        claims.appendChild(valueDd(claim.value));
      });
      part.appendChild(claims);
      block.appendChild(part);
    });
    return block;
  }

  function requestDone(request) {
    $("pin").value = "";  // answered: the PIN typed for it does not stay in the page
    var result = clear($("request-result"));
    result.hidden = false;
    $("approve").disabled = true;
    $("decline").disabled = true;
    if (request.state === "sent") {
      var who = request.verifier.verified && request.verifier.name ? request.verifier.name : request.verifier.client_id;
      result.appendChild(el("p", { "class": "success", text: t("shared", who) }));
      if (request.redirect_uri && /^https?:\/\//.test(request.redirect_uri)) {
        result.appendChild(el("p", {}, [el("a", { "class": "button", href: request.redirect_uri, text: t("continueAt") })]));
      }
    } else if (request.state === "declined") {
      result.appendChild(el("p", { "class": "success", text: t("declined") }));
    } else if (request.error) {
      result.appendChild(el("p", { "class": "error-text", text: errorText(request.error) }));
    } else {
      result.appendChild(el("p", { text: t("alreadyAnswered") }));
    }
  }

  function approveRequest() {
    var id = $("view-request").dataset.id;
    var selection = {};
    var optional = [];
    document.querySelectorAll("#request-queries fieldset[data-credential]").forEach(function (block) {
      selection[block.dataset.query] = block.dataset.credential;
    });
    document.querySelectorAll("#request-queries input[type=radio]:checked").forEach(function (radio) {
      selection[radio.dataset.query] = radio.value;
    });
    document.querySelectorAll("#request-queries input.optional:checked").forEach(function (box) {
      optional.push(box.dataset.query);
    });
    var body = { selection: selection, include_optional: optional };
    if (!$("pin-box").hidden) { body.pin = $("pin").value; }
    answer(api("POST", "/v1/presentations/" + encodeURIComponent(id) + "/approve", body), selection);
  }

  function declineRequest() {
    answer(api("POST", "/v1/presentations/" + encodeURIComponent($("view-request").dataset.id) + "/decline"), null);
  }

  // ``chosen``: the credentials Share sent ({query id: credential id}); null for Decline.
  function answer(promise, chosen) {
    $("approve").disabled = true;
    $("decline").disabled = true;
    showError("");
    setStatus(t("working"));
    promise.then(function (request) { setStatus(""); requestDone(request); })
      .catch(function (err) {
        setStatus("");
        showError(errorText(err));
        // A PIN set meanwhile (from another device): ask for it; trying without cost no attempt.
        if (err.error === "pin_required") { askForPin("pin-box", "pin"); }
        if (err.error === "invalid_pin" || err.error === "pin_required") {
          $("approve").disabled = false;
          $("decline").disabled = false;
        }
        // A chosen credential stopped opening: nothing was sent and the request is still pending.
        // Shown again without it, to choose another (if one answers) or decline; the message stays.
        if (err.error === "credential_unreadable") { renderRequest($("view-request").dataset.id); }
        // Nothing was sent either: the request is read again, and what changed is said (see explainConflict).
        if (err.error === "conflict") {
          renderRequest($("view-request").dataset.id, function (request) { explainConflict(request, chosen); });
        }
        // Locked: the citizen can still decline (or reset the PIN and come back).
        if (pinBlocked(err, "pin-box", "forgot-pin-request") && !err.sessionsEnded) { $("decline").disabled = false; }
      });
  }

  // -- history, alerts, settings -------------------------------------------------------------------

  function renderHistory() {
    var n = ticket("history");
    var q = $("history-q").value.trim();
    api("GET", "/v1/history" + (q ? "?" + new URLSearchParams({ q: q }).toString() : "")).then(function (entries) {
      if (!current("history", n)) { return; }
      var list = clear($("history"));
      if (!entries.length) { list.appendChild(el("li", { text: t("noEntries") })); }
      entries.forEach(function (entry) {
        if (entry.unreadable) { list.appendChild(unreadableEntry(entry)); return; }
        var d = entry.details || {};
        // An entry imported from a backup is shown as what it recorded, when it happened, and marked.
        var imported = entry.kind === "imported";
        var kind = imported ? String(d.original_kind || "") : entry.kind;
        var label = imported ? t("kind_imported", t("kind_" + kind)) : t("kind_" + kind);
        var item = el("li", { "class": "entry " + entry.kind }, [
          el("p", {}, [el("strong", { text: label }),
                       document.createTextNode(" · " + fmtTime(imported && d.original_time ? d.original_time : entry.created_at))])
        ]);
        if (kind === "receipt" || kind === "deletion") {
          item.appendChild(el("p", { text: [d.credential_name, d.issuer_name].filter(Boolean).join(" · ") }));
          // Why the issuer queried the registry for it; the whole of it is on the credential's screen.
          var asked = d.query_evidence && typeof d.query_evidence.purpose === "string" ? d.query_evidence.purpose : "";
          if (asked) { item.appendChild(el("p", { "class": "meta", text: t("purpose") + ": " + asked })); }
        } else if (kind === "restore") {
          item.appendChild(el("p", { text: t("restored", d.credentials_added || 0) }));
        } else {
          var verifier = d.verifier || {};
          item.appendChild(el("p", { text: verifier.verified && verifier.name ? verifier.name : t("unverified") }));
          if (d.purpose) { item.appendChild(el("p", { "class": "meta", text: t("purpose") + ": " + d.purpose })); }
          (d.disclosed || []).forEach(function (part) {
            var claims = el("dl", { "class": "claims" });
            (part.claims || []).forEach(function (claim) {
              claims.appendChild(el("dt", { text: claim.name }));
              claims.appendChild(valueDd(claim.value));
            });
            item.appendChild(el("p", { "class": "meta", text: part.credential_name }));
            item.appendChild(claims);
          });
        }
        list.appendChild(item);
      });
    }).catch(function (err) { showError(errorText(err)); });
  }

  // An entry whose stored data does not open: the API knows only its kind and time, so it is shown as
  // that and marked, never read as an empty entry (a share without details would read "unverified").
  function unreadableEntry(entry) {
    var label = entry.kind === "imported" ? t("importedEntry") : t("kind_" + entry.kind);
    return el("li", { "class": "entry unreadable " + entry.kind }, [
      el("p", {}, [el("strong", { text: label }), document.createTextNode(" · " + fmtTime(entry.created_at))]),
      el("p", { "class": "meta", text: t("entryUnreadable") })
    ]);
  }

  function renderAlerts() {
    var n = ticket("alerts");
    api("GET", "/v1/alerts").then(function (alerts) {
      if (!current("alerts", n)) { return; }
      var list = clear($("alerts"));
      if (!alerts.length) { list.appendChild(el("li", { text: t("noEntries") })); }
      alerts.forEach(function (alert) {
        var item = el("li", { "class": "entry alert-" + alert.kind + (alert.read ? "" : " unread") }, [
          el("p", {}, [el("strong", { text: t("alert_" + alert.kind) }),
                       document.createTextNode(" · " + fmtTime(alert.created_at) + (alert.read ? "" : " · " + t("unread")))])
        ]);
        if (alert.credential_id) {
          item.appendChild(el("p", {}, [el("a", { href: "#/card/" + encodeURIComponent(alert.credential_id), text: t("seeCard") })]));
        }
        list.appendChild(item);
      });
      countUnread(alerts.filter(function (a) { return !a.read; }).length);
    }).catch(function (err) { showError(errorText(err)); });
  }

  function countUnread(count) {
    var badgeEl = $("alert-count");
    badgeEl.textContent = String(count);
    badgeEl.hidden = !count;
    badgeEl.setAttribute("aria-label", count + " " + t("unread"));
  }

  function startAlerts() {
    // Server-Sent Events over fetch (EventSource cannot send the Bearer token): new alerts update the
    // unread count and refresh the screen that shows them.
    if (alertStream || !tokens() || !window.ReadableStream) { return; }
    var controller = new AbortController();
    alertStream = controller;
    api("GET", "/v1/alerts?unread=true").then(function (alerts) { countUnread(alerts.length); }).catch(function () {});
    fetch("/v1/alerts/stream", { headers: { Authorization: "Bearer " + tokens().access }, signal: controller.signal })
      .then(function (response) {
        if (!response.ok || !response.body) { throw new Error("stream"); }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) { throw new Error("closed"); }
            buffer += decoder.decode(chunk.value, { stream: true });
            var events = buffer.split("\n\n");
            buffer = events.pop();
            if (events.some(function (e) { return e.indexOf("event: alert") >= 0; })) { onAlert(); }
            return pump();
          });
        }
        return pump();
      }).catch(function () {
        if (alertStream === controller) {
          alertStream = null;
          if (!controller.signal.aborted) { setTimeout(startAlerts, 5000); }
        }
      });
  }

  function onAlert() {
    var view = location.hash.replace(/^#\/?/, "").split("/")[0];
    if (view === "alerts") { renderAlerts(); return; }
    api("GET", "/v1/alerts?unread=true").then(function (alerts) { countUnread(alerts.length); }).catch(function () {});
    if (view === "cards" || view === "") { renderCards(); }
    if (view === "card") { renderCard(decodeURIComponent(location.hash.split("/")[2] || "")); }
    // A deferred credential may have arrived through the background sweep while its offer is on screen.
    if (view === "offer" && !$("offer-result").hidden) { renderOffer(decodeURIComponent(location.hash.split("/")[2] || "")); }
  }

  function markRead() {
    api("POST", "/v1/alerts/read", { ids: null }).then(renderAlerts).catch(function (err) { showError(errorText(err)); });
  }

  function renderSettings() {
    var n = ticket("logins");
    api("GET", "/v1/me").then(function (who) {
      me = who;
      $("me").textContent = who.name + " · " + who.identifier;
      $("pin-state").textContent = who.pin_set ? t("pinOn") : t("pinOff");
      $("current-pin-box").hidden = !who.pin_set;
      $("export-pin-box").hidden = !who.pin_set;
    }).catch(function (err) { showError(errorText(err)); });
    api("GET", "/v1/me/logins?limit=20").then(function (items) {
      if (!current("logins", n)) { return; }
      var logins = clear($("logins"));
      items.forEach(function (login) {
        var item = el("li", { "class": "entry" }, [el("p", { text: fmtTime(login.created_at) + " · " + login.method + " · " +
          login.assurance_level + (login.current ? " · " + t("current") : "") }),
          el("p", { "class": "meta", text: login.user_agent })]);
        if (login.active && !login.current) {
          var end = el("button", { type: "button", text: t("endSession") });
          end.addEventListener("click", function () {
            api("DELETE", "/v1/sessions/" + encodeURIComponent(login.id)).then(function () {
              flash = t("sessionEnded");
              route(null);
            }).catch(function (err) { showError(errorText(err)); });
          });
          item.appendChild(end);
        }
        logins.appendChild(item);
      });
    }).catch(function (err) { showError(errorText(err)); });
  }

  function askForPin(box, input) {
    // The server says a PIN is set (from another device since this screen was drawn): show its field.
    if (me) { me.pin_set = true; }
    $("pin-state").textContent = t("pinOn");
    $(box).hidden = false;
    $(input).focus();
  }

  function savePin(event) {
    event.preventDefault();
    var body = { pin: $("new-pin").value.trim() || null };
    if (!$("current-pin-box").hidden) { body.current_pin = $("current-pin").value; }
    api("PUT", "/v1/pin", body).then(function () {
      $("new-pin").value = "";
      $("current-pin").value = "";
      me = null;
      flash = t("pinSaved");
      route(null);
    }).catch(function (err) {
      showError(errorText(err));
      if (err.error === "pin_required") { askForPin("current-pin-box", "current-pin"); }
      pinBlocked(err, "current-pin-box", "forgot-pin-settings");
    });
  }

  function pinBlocked(err, box, link) {
    // The PIN can no longer be tried: locked after too many wrong ones, or unusable. The way out is the
    // reset, so the "Forgot your PIN?" link next to the field gets the focus. True when so.
    if (err.sessionsEnded) {
      // The lockout also ended every session of the wallet, this one included: log in again.
      dropTokens();
      flashError = t("pinLockedEnded");
      go("login");
      return true;
    }
    if (err.error !== "pin_locked" && err.error !== "pin_reset_required") { return false; }
    $(box).hidden = false;
    $(link).focus();
    return true;
  }

  // -- a forgotten PIN -----------------------------------------------------------------------------
  // POST /v1/pin/reset sets a new PIN without the current one, but only from a session whose login is a
  // few minutes old (403 recent_login_required otherwise), and ends the wallet's other sessions. So the
  // screen explains that, sends the citizen to log in again at the identity provider (the callback
  // returns here, see finishLogin), then asks for the new PIN twice, with the rules of the PIN form.

  var resetBack = "#/settings";

  function safeBack(hash) {
    return /^#\/(settings|request\/[^/]+)$/.test(hash || "") ? hash : "#/settings";
  }

  function resetState() {
    try { return JSON.parse(sessionStorage.getItem(RESET_KEY) || "null"); } catch (e) { return null; }
  }

  function setResetState(step, back) {
    sessionStorage.setItem(RESET_KEY, JSON.stringify({ step: step, back: safeBack(back) }));
  }

  function leavePinReset() {
    // Left (or done): no PIN stays in the page, no reset marker in the tab.
    $("reset-pin").value = "";
    $("reset-pin-again").value = "";
    sessionStorage.removeItem(RESET_KEY);
  }

  function markInvalid(input, invalid) {
    if (invalid) { input.setAttribute("aria-invalid", "true"); } else { input.removeAttribute("aria-invalid"); }
  }

  function showResetLogin() {
    $("reset-form").hidden = true;
    $("reset-login").hidden = false;
    return providerButtons("reset-providers", $("reset-login"), "resetLoginWith", function () {
      setResetState("login", resetBack);
    });
  }

  function renderPinReset() {
    var state = resetState();
    if (state) { resetBack = safeBack(state.back); }
    $("pin-reset-back").setAttribute("href", resetBack);
    clear($("reset-result")).hidden = true;
    ["reset-pin", "reset-pin-again"].forEach(function (id) { $(id).value = ""; markInvalid($(id), false); });
    if (!state || state.step !== "ready") { showResetLogin(); return; }
    // Just logged in again: the new PIN, for the wallet that login opened.
    $("reset-login").hidden = true;
    $("reset-form").hidden = false;
    $("reset-save").disabled = false;
    $("reset-pin").focus();
    var n = ticket("reset");
    api("GET", "/v1/me").then(function (who) {
      if (!current("reset", n)) { return; }
      me = who;
      $("reset-who").textContent = t("resetWho", who.name + " · " + who.identifier);
    }).catch(function (err) { showError(errorText(err)); });
  }

  function submitReset(event) {
    event.preventDefault();
    var pin = $("reset-pin");
    var again = $("reset-pin-again");
    showError("");
    markInvalid(pin, false);
    markInvalid(again, false);
    // The rules of the PIN form (4 to 12 digits), said in the app's words rather than the browser's.
    if (!/^[0-9]{4,12}$/.test(pin.value)) {
      markInvalid(pin, true);
      showError(t("err_pin_rules"));
      pin.focus();
      return;
    }
    if (again.value !== pin.value) {
      again.value = "";
      markInvalid(again, true);
      showError(t("err_pin_mismatch"));
      again.focus();
      return;
    }
    $("reset-save").disabled = true;
    setStatus(t("working"));
    api("POST", "/v1/pin/reset", { pin: pin.value }).then(function () {
      setStatus("");
      leavePinReset();
      if (me) { me.pin_set = true; }
      $("reset-form").hidden = true;
      var result = clear($("reset-result"));
      result.hidden = false;
      var done = el("p", { id: "reset-done", "class": "success", tabindex: "-1", text: t("resetDone") });
      result.appendChild(done);
      result.appendChild(el("p", {}, [el("a", { "class": "button primary", href: resetBack,
        text: resetBack === "#/settings" ? t("continueAt") : t("backToRequest") })]));
      done.focus();
    }).catch(function (err) {
      setStatus("");
      $("reset-save").disabled = false;
      if (err.error === "recent_login_required") {
        // The login is too old by now: log in again (the PIN typed is not kept meanwhile).
        pin.value = "";
        again.value = "";
        sessionStorage.removeItem(RESET_KEY);
        showError(t("err_recent_login_required"));
        showResetLogin().then(function () {
          var first = $("reset-login").querySelector("button");
          if (first) { first.focus(); }
        });
      } else if (err.error === "invalid_request") {
        markInvalid(pin, true);
        showError(t("err_pin_rules"));
        pin.focus();
      } else if (!err.error) {
        showError(t("resetNetwork"));
      } else {
        showError(errorText(err));
      }
    });
  }

  function exportBackup(event) {
    event.preventDefault();
    setStatus(t("working"));
    var body = { passphrase: $("export-pass").value };
    // Exporting hands out the holder keys: with a PIN set, it asks for it as sharing does.
    if (!$("export-pin-box").hidden) { body.pin = $("export-pin").value; }
    api("POST", "/v1/backup/export", body).then(function (backup) {
      // What could not be read is told here, and the file holds only what an import reads: the count
      // (and a list, from a service that still sent one) would sit in clear in a file kept on drives.
      var skipped = typeof backup.skipped_count === "number" ? backup.skipped_count : 0;
      delete backup.skipped_count;
      delete backup.skipped;
      var blob = new Blob([JSON.stringify(backup)], { type: "application/json" });
      var link = el("a", { href: URL.createObjectURL(blob), download: "cartera-backup.json" });
      document.body.appendChild(link);
      link.click();
      link.remove();
      $("export-pass").value = "";
      $("export-pin").value = "";
      setStatus(skipped > 0 ? t("exported") + " " + (skipped === 1 ? t("backupSkippedOne") : t("backupSkipped", skipped))
                            : t("exported"));
    }).catch(function (err) {
      setStatus("");
      showError(errorText(err));
      if (err.error === "pin_required") { askForPin("export-pin-box", "export-pin"); }
      pinBlocked(err, "export-pin-box", "forgot-pin-export");
    });
  }

  function importBackup(event) {
    event.preventDefault();
    var file = $("import-file").files[0];
    if (!file) { return; }
    setStatus(t("working"));
    file.text().then(function (text) {
      var parsed;
      try { parsed = JSON.parse(text); } catch (e) { throw { error: "invalid_backup" }; }
      return api("POST", "/v1/backup/import", { passphrase: $("import-pass").value, backup: parsed });
    }).then(function (result) {
      $("import-pass").value = "";
      setStatus(t("imported", result.credentials_added));
    }).catch(function (err) { setStatus(""); showError(errorText(err)); });
  }

  function logout() {
    api("POST", "/v1/auth/logout").catch(function () {}).then(function () { dropTokens(); go("login"); route(null); });
  }

  // -- start ---------------------------------------------------------------------------------------

  $("lang").addEventListener("change", function () {
    lang = $("lang").value;
    localStorage.setItem("cartera.lang", lang);
    translatePage();
    route(null);
  });
  document.querySelector(".skip").addEventListener("click", function (event) {
    // The hash is the app's route, so the skip link moves the focus itself instead of navigating.
    event.preventDefault();
    $("main").focus();
  });
  $("card-delete").addEventListener("click", deleteCard);
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("photo").addEventListener("change", function () { readPhoto($("photo").files[0]); $("photo").value = ""; });
  $("paste-form").addEventListener("submit", function (event) { event.preventDefault(); scanned($("link").value); });
  $("offer-form").addEventListener("submit", acceptOffer);
  $("approve").addEventListener("click", approveRequest);
  $("decline").addEventListener("click", declineRequest);
  $("alerts-read").addEventListener("click", markRead);
  $("export-form").addEventListener("submit", exportBackup);
  $("pin-form").addEventListener("submit", savePin);
  $("reset-form").addEventListener("submit", submitReset);
  document.querySelectorAll(".forgot-pin").forEach(function (link) {
    // Remember where the PIN was asked, to come back there once it is reset.
    link.addEventListener("click", function () {
      sessionStorage.removeItem(RESET_KEY);
      resetBack = safeBack(location.hash);
    });
  });
  $("history-search").addEventListener("submit", function (event) { event.preventDefault(); renderHistory(); });
  $("import-form").addEventListener("submit", importBackup);
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);

  // Exposed for an installed app's share target or a test harness to hand over a scanned text, exactly
  // as the camera does.
  window.carteraScanned = scanned;

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(function () {});
  }
  translatePage();
  (location.pathname === "/app/callback" ? finishLogin()
    : location.pathname === "/app/" ? returnFromIssuer() : Promise.resolve()).then(function () { route(null); });
})();
