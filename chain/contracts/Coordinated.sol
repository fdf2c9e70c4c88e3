// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Coordinated: the admin and coordinator roles shared by NodeStaking and TaskLedger.
/// @notice The admin holds DEFAULT_ADMIN_ROLE; one coordinator at a time holds COORDINATOR_ROLE, and
/// `rotateCoordinator` (admin) moves the role to a new key in one step.
abstract contract Coordinated is AccessControl {
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");

    address public coordinator;

    event CoordinatorRotated(address indexed previous, address indexed next);

    constructor(address admin, address coordinator_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(COORDINATOR_ROLE, coordinator_);
        coordinator = coordinator_;
    }

    function rotateCoordinator(address next) external onlyRole(DEFAULT_ADMIN_ROLE) {
        address previous = coordinator;
        _revokeRole(COORDINATOR_ROLE, previous);
        _grantRole(COORDINATOR_ROLE, next);
        coordinator = next;
        emit CoordinatorRotated(previous, next);
    }
}
