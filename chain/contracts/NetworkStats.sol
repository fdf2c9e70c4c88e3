// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title NetworkStats: network-wide counters kept by NodeStaking and TaskLedger.
/// @notice Only holders of UPDATER_ROLE (the two other contracts) change the counters. The counters of
/// nodes and GPUs count nodes that are active in NodeStaking (staked, not unstaking, not slashed or kicked out).
contract NetworkStats is AccessControl {
    bytes32 public constant UPDATER_ROLE = keccak256("UPDATER_ROLE");

    uint64 public nodes;
    uint64 public gpus;
    uint64 public tasksSettled;
    uint64 public slashes;
    uint64 public kickOuts;
    uint128 public feesSettled;
    uint128 public slashedTotal;

    event NodesUpdated(uint256 nodes, uint256 gpus);
    event TasksUpdated(uint256 tasksSettled, uint256 feesSettled);
    event SlashesUpdated(uint256 slashes, uint256 slashedTotal);
    event KickOutsUpdated(uint256 kickOuts);

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Adds signed deltas to the node and GPU counters.
    function addNodes(int256 nodeDelta, int256 gpuDelta) external onlyRole(UPDATER_ROLE) {
        nodes = uint64(uint256(int256(uint256(nodes)) + nodeDelta));
        gpus = uint64(uint256(int256(uint256(gpus)) + gpuDelta));
        emit NodesUpdated(nodes, gpus);
    }

    function addTasks(uint256 count, uint256 fees) external onlyRole(UPDATER_ROLE) {
        tasksSettled += uint64(count);
        feesSettled += uint128(fees);
        emit TasksUpdated(tasksSettled, feesSettled);
    }

    function addSlash(uint256 amount) external onlyRole(UPDATER_ROLE) {
        slashes += 1;
        slashedTotal += uint128(amount);
        emit SlashesUpdated(slashes, slashedTotal);
    }

    function addKickOut() external onlyRole(UPDATER_ROLE) {
        kickOuts += 1;
        emit KickOutsUpdated(kickOuts);
    }

    /// @notice All counters in one call: (nodes, gpus, tasksSettled, slashes, kickOuts, feesSettled, slashedTotal).
    function snapshot() external view returns (uint256, uint256, uint256, uint256, uint256, uint256, uint256) {
        return (nodes, gpus, tasksSettled, slashes, kickOuts, feesSettled, slashedTotal);
    }
}
