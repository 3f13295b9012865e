"""One complete, fictional example content per record category, as a Lieto partner would deposit it.

Everyone here is invented: the client "Janne Koskinen", the young person of the youth referral, and the own
social worker "Sanna Virtanen". Telephone numbers are placeholders and e-mail addresses use the reserved
``.example`` top-level domain (RFC 2606), so none of them reaches a real person. Every example fills every
field of its schema, so that tests and the demo exercise the whole contract.
"""

from __future__ import annotations

from typing import Any

OWN_SOCIAL_WORKER: dict[str, str] = {
    "name": "Sanna Virtanen",
    "title": "sosiaalityöntekijä",
    "phone": "+358 40 000 0101",
    "email": "sanna.virtanen@varha.example",
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "activation_plan": {
        "plan_date": "2025-09-15",
        "goals": [
            "Säännöllinen päivärytmi ja arjen hallinta",
            "Työelämätaitojen vahvistaminen",
            "Jatkopolun selkiyttäminen: työkokeilu tai koulutus",
        ],
        "education_and_work_history": (
            "Logistiikan perustutkinto, Turun ammattiopisto 2012. Varastotyöntekijänä 2012–2019, "
            "sen jälkeen lyhyitä keikkatöitä. Työttömänä vuodesta 2021."
        ),
        "earlier_measures_assessment": (
            "Trukkikorttikoulutus suoritettu 2022. Palkkatukityö kunnan varikolla keskeytyi 2023 "
            "jaksamiseen liittyvistä syistä."
        ),
        "measures": [
            "Kuntouttava työtoiminta Kisällissä 3 päivää viikossa",
            "Terveystarkastus työttömille",
            "Työarvio kuntouttavan työtoiminnan aikana",
        ],
        "activity_place": "Kisälli, Lieto",
        "hours_per_week": 12,
        "start_date": "2025-10-01",
        "end_date": "2026-03-31",
        "support_and_guidance": (
            "Yksilövalmentaja tapaa asiakkaan kahden viikon välein. Työvalmentaja ohjaa työtehtävissä "
            "puutyöpajalla ja kierrätysmyymälässä."
        ),
        "review_date": "2026-01-15",
        "own_social_worker": dict(OWN_SOCIAL_WORKER),
    },
    "activity_decision": {
        "decision_date": "2025-09-22",
        "start_date": "2025-10-01",
        "end_date": "2026-03-31",
        "days_per_week": 3,
        "hours_per_day": 4,
        "activity_place": "Kisälli, Lieto",
        "goals": [
            "Säännöllinen päivärytmi ja arjen hallinta",
            "Työelämätaitojen vahvistaminen",
        ],
        "support_and_guidance": ("Työvalmentajan ohjaus päivittäin, yksilövalmentajan tapaaminen joka toinen viikko."),
        "own_social_worker": dict(OWN_SOCIAL_WORKER),
        "work_restrictions": [
            "Ei yli 10 kg:n nostoja",
            "Mahdollisuus istuma- tai seisomatauolle tunnin välein",
        ],
    },
    "attendance_report": {
        "period_start": "2025-10-01",
        "period_end": "2025-10-31",
        "days_planned": 14,
        "days_attended": 12,
        "progress_against_goals": (
            "Päivärytmi on vakiintunut: asiakas saapuu ajallaan ja ilmoittaa poissaoloistaan etukäteen.\n"
            "Työskentelee puutyöpajalla itsenäisesti annetun ohjeen mukaan."
        ),
        "next_step": "Jatketaan suunnitelman mukaisesti. Työarvio marraskuussa.",
    },
    "interruption_notice": {
        "interruption_date": "2026-02-10",
        "reason_category": "own_reason",
        "results_summary": (
            "Asiakas osallistui työtoimintaan lokakuusta helmikuuhun, läsnäolo noin 85 %.\n"
            "Päivärytmi vakiintui ja puutyöpajan tehtävät sujuivat itsenäisesti.\n"
            "Asiakas keskeytti toiminnan omasta pyynnöstään aloittaakseen työkokeilun."
        ),
        "proposed_next_step": "Työkokeilu logistiikka-alalla; suunnitelman tarkistus omatyöntekijän kanssa.",
    },
    "work_assessment": {
        "assessment_date": "2025-11-28",
        "tasks_tried": [
            "Puutyöpajan sarjatyö",
            "Kierrätysmyymälän vastaanotto ja lajittelu",
            "Pakkaus ja varastokirjanpito",
        ],
        "hours_tolerated_per_day": 4.5,
        "observed_limitations": (
            "Yli tunnin yhtäjaksoinen seisominen lisää väsymystä; vaihtelu istuma- ja seisomatyön "
            "välillä auttaa. Keskittyminen heikkenee iltapäivällä."
        ),
        "attendance_rate": 86.5,
        "client_view": "Asiakas kokee varastotehtävät mielekkäiksi ja toivoo työkokeilua logistiikka-alalla.",
        "coach_recommendation": "Työkokeilu varastossa 4 tuntia päivässä, vaihtelevat tehtävät.",
    },
    "health_check_summary": {
        "check_date": "2025-11-12",
        "attended": True,
        "work_restrictions": [
            "Ei yli 10 kg:n nostoja",
            "Vaihtelu istuma- ja seisomatyön välillä",
        ],
        "recommended_services": [
            "Fysioterapeutin arvio",
            "Työkykykoordinaattorin tapaaminen",
        ],
        "physician_notes": (
            "Alaselän rasitusperäistä kipuilua pitkässä seisomatyössä. Ohjattu fysioterapiaan; "
            "uusi arvio kolmen kuukauden kuluttua."
        ),
    },
    "service_need_assessment": {
        "assessment_date": "2025-09-08",
        "identity_and_contact": {
            "name": "Janne Koskinen",
            "phone": "+358 40 000 0202",
            "email": "janne.koskinen@posti.example",
        },
        "education_and_work_history": "Logistiikan perustutkinto 2012; varastotyötä 2012–2019.",
        "social_situation": "Asuu yksin vuokra-asunnossa Liedon keskustassa. Ei autoa; kulkee bussilla.",
        "health_and_work_capacity": ("Alaselän kipuilua pitkässä seisomatyössä; ei muita tiedossa olevia rajoitteita."),
        "service_needs": [
            "Päivärytmin tuki",
            "Työkyvyn arviointi",
            "Ohjaus työkokeiluun",
        ],
        "proposed_measures": [
            "Kuntouttava työtoiminta",
            "Terveystarkastus työttömille",
        ],
    },
    "concern_notification": {
        "observed_at": "2026-01-20",
        "concern": ("Asiakkaan jaksaminen ja toimeentulo ovat heikentyneet; hän kertoo jääneensä ilman ruokaa."),
        "facts": (
            "Asiakas on ollut poissa neljä päivää kahden viikon aikana. Paikalla ollessaan hän on kertonut, "
            "ettei vuokraa ole maksettu ja että ruoka on loppunut."
        ),
        "client_informed": True,
        "urgent": False,
    },
    "substance_incident": {
        "incident_date": "2026-01-27",
        "observed_facts": (
            "Asiakas saapui työtoimintaan klo 9.00. Hengityksessä havaittiin alkoholin hajua ja puhe oli "
            "sammaltavaa. Asiakas kertoi käyttäneensä alkoholia edellisenä iltana."
        ),
        "action_taken": (
            "Asiakas ohjattiin kotiin nollatoleranssiperiaatteen mukaisesti. Asiasta keskusteltiin asiakkaan "
            "kanssa ja omatyöntekijälle ilmoitettiin samana päivänä."
        ),
    },
    "rehabilitation_statement": {
        "statement_date": "2026-02-20",
        "functional_capacity": (
            "Selviytyy 4–5 tunnin työpäivistä, kun työ sisältää vaihtelua istuma- ja seisomatyön välillä. "
            "Raskaat nostot eivät onnistu."
        ),
        "rehabilitation_need": "Aiempaan varastotyöhön paluu ei onnistu ilman työtehtävien sovittamista.",
        "proposed_rehabilitation": ("Kelan ammatillisena kuntoutuksena työkokeilu kevyemmissä logistiikkatehtävissä."),
        "author_role": "yksilövalmentaja",
    },
    "benefit_status": {
        "threshold_reached_on": "2025-08-29",
        "benefit": "labour_market_subsidy",
    },
    "cofinancing_entry": {
        "month": "2025-11",
        "benefit_day_band": "500-999",
        "amount_band": "300–499 € / kk",
        "current_service_status": "Kuntouttavassa työtoiminnassa (Kisälli, Lieto)",
    },
    "youth_referral": {
        "referral_date": "2025-10-06",
        "situation": (
            "17-vuotias nuori on keskeyttänyt ammatillisen koulutuksen keväällä. Asuu vanhempansa luona "
            "Liedossa. Vuorokausirytmi on kääntynyt ja kaverisuhteet vähentyneet."
        ),
        "support_need": "Tuki päivärytmiin ja ohjaus takaisin koulutukseen tai työpajatoimintaan.",
        "young_person_informed": True,
        "guardian_informed": True,
    },
    "contact_details": dict(OWN_SOCIAL_WORKER),
}
